"""Judge trunks compared in PyTorch on gait10 (docs/validator.md, "Why BatchNorm").

Dump the train and val splits once (doppel's own preprocessing, 64x64, one channel):
    bin/doppel-loader --data ../shared/data/gait10 --resolution 64 --split train --batch 64 --out @tcp://127.0.0.1:47611 &
    python3 tools/stream_numpy.py '>tcp://127.0.0.1:47611' --save /tmp/exp/train.npz
    (the same with --split val -> /tmp/exp/val.npz)
then, with torch (.venv-ref):
    python bench/judge_trunks.py ARCH AUG STEPS [SEED]
ARCH: judge (the GroupNorm ResNet), simple (conv, BatchNorm, ReLU, max pool), simple:pool=avg,
simple:norm=gn, simple:norm=none, simple:pool=stride, ...; AUG letters: t time shift, g gain,
f Doppler shift, c time crop, e time erase, m mixup, s label smoothing.
Prints the val accuracy (and with test-time shifts). Data paths: $JUDGE_NPZ_DIR (/tmp/exp).
"""
import os
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F, sys, time
torch.set_num_threads(2)
D=os.environ.get('JUDGE_NPZ_DIR','/tmp/exp')
tr=np.load(D+'/train.npz'); va=np.load(D+'/val.npz')
Xtr=torch.tensor(tr['image']); ytr=torch.tensor(tr['label']).long()
Xva=torch.tensor(va['image']); yva=torch.tensor(va['label']).long()
arch=sys.argv[1]; aug=sys.argv[2]; steps=int(sys.argv[3]); seed=int(sys.argv[4]) if len(sys.argv)>4 else 0
torch.manual_seed(seed)
def gn(c): return nn.GroupNorm(8,c,eps=1e-6)
class Res(nn.Module):
    def __init__(s,i,o):
        super().__init__(); s.n1=gn(i); s.c1=nn.Conv2d(i,o,3,padding=1); s.n2=gn(o); s.c2=nn.Conv2d(o,o,3,padding=1)
        s.sc=nn.Conv2d(i,o,1) if i!=o else nn.Identity()
    def forward(s,x):
        h=s.c1(F.silu(s.n1(x))); h=s.c2(F.silu(s.n2(h))); return s.sc(x)+h
class Judge(nn.Module):
    def __init__(s,ch=(32,64,128,128),drop=0.1):
        super().__init__(); s.ci=nn.Conv2d(1,ch[0],3,padding=1); L=[]; c=ch[0]
        for i,o in enumerate(ch):
            L.append(Res(c,o)); c=o
            if i<len(ch)-1: L.append(nn.Conv2d(c,c,3,stride=2,padding=1))
        s.b=nn.Sequential(*L); s.no=gn(c); s.d=nn.Dropout(drop); s.fc=nn.Linear(c,10)
    def forward(s,x):
        h=s.b(s.ci(x)); h=F.silu(s.no(h)).mean((2,3)); return s.fc(s.d(h))
class Simple(nn.Module):
    def __init__(s,drop=0.3,norm='bn',pool='max',act='relu'):
        super().__init__(); L=[]; c=1
        for o in (32,64,128,128):
            L+= [nn.Conv2d(c,o,3,padding=1,stride=2 if pool=='stride' else 1), nn.BatchNorm2d(o) if norm=='bn' else nn.GroupNorm(8,o) if norm=='gn' else nn.Identity(), nn.ReLU() if act=='relu' else nn.SiLU()]
            if pool=='max': L.append(nn.MaxPool2d(2))
            elif pool=='avg': L.append(nn.AvgPool2d(2))
            c=o
        s.f=nn.Sequential(*L); s.d=nn.Dropout(drop); s.fc=nn.Linear(c,10)
    def forward(s,x): return s.fc(s.d(s.f(x).mean((2,3))))
if arch.startswith('simple'):
    kw=dict(x.split('=') for x in arch.split(':')[1:]); m=Simple(**kw)
else: m = Judge() if arch=='judge' else Judge(drop=0.3)
opt=torch.optim.AdamW(m.parameters(),lr=1e-3,weight_decay=0.01)
sched=torch.optim.lr_scheduler.OneCycleLR(opt,1e-3,total_steps=steps,pct_start=0.07)
g=torch.Generator().manual_seed(seed)
def augment(x):
    if 't' in aug:
        sh=torch.randint(0,64,(x.shape[0],),generator=g)
        x=torch.stack([torch.roll(x[i],int(sh[i]),dims=2) for i in range(x.shape[0])])
    if 'g' in aug:  # gain/contrast jitter on [-1,1] values
        a=1+0.2*(torch.rand(x.shape[0],1,1,1,generator=g)*2-1); b=0.2*(torch.rand(x.shape[0],1,1,1,generator=g)*2-1)
        x=(x+1)*a-1+b
    if 'f' in aug:  # doppler shift +-2 bins
        sh=torch.randint(-2,3,(x.shape[0],),generator=g)
        x=torch.stack([torch.roll(x[i],int(sh[i]),dims=1) for i in range(x.shape[0])])
    if 'c' in aug:  # random time crop 48..64 cols resized back
        out=[]
        for i in range(x.shape[0]):
            w=int(torch.randint(48,65,(1,),generator=g)); o=int(torch.randint(0,64-w+1,(1,),generator=g))
            out.append(F.interpolate(x[i:i+1,:,:,o:o+w],size=(64,64),mode='bilinear',align_corners=False)[0])
        x=torch.stack(out)
    if 'e' in aug:  # random erase a time band
        x=x.clone()
        for i in range(x.shape[0]):
            w=int(torch.randint(0,16,(1,),generator=g)); o=int(torch.randint(0,64,(1,),generator=g))
            x[i,:,:,o:o+w]=-1
    return x
def evaluate(tta=False):
    m.eval()
    with torch.no_grad():
        if tta: p=sum(F.softmax(m(torch.roll(Xva,s,dims=3)),1) for s in range(0,64,8))
        else: p=m(Xva)
    m.train(); return (p.argmax(1)==yva).float().mean().item()
t0=time.time()
for step in range(steps):
    idx=torch.randint(0,len(Xtr),(32,),generator=g)
    x=augment(Xtr[idx]); y=ytr[idx]
    if 'm' in aug:
        lam=float(np.random.beta(0.4,0.4)); perm=torch.randperm(32,generator=g)
        x=lam*x+(1-lam)*x[perm]; out=m(x); loss=lam*F.cross_entropy(out,y)+(1-lam)*F.cross_entropy(out,y[perm])
    else:
        loss=F.cross_entropy(m(x),y,label_smoothing=0.1 if 's' in aug else 0)
    opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    if (step+1)%(steps//4)==0: print(step+1, round(loss.item(),3), 'val', round(evaluate(),3), flush=True)
print(arch,aug,steps,seed,'final val',round(evaluate(),4),'tta',round(evaluate(True),4),'time',round(time.time()-t0))
