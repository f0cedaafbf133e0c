// doppel-validator: judges whether spectrograms belong to the right person. `train` fits the
// user classifier (models/judge.h) on real spectrograms, `classify` measures a set against it.
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "validator.h"

static const char *USAGE =
    "usage: doppel-validator train|classify|score [options]\n"
    "\n"
    "examples:\n"
    "  doppel-loader --data ../shared/data/gait10 --resolution 64 --shuffle --forever --augment &\n"
    "  doppel-loader --data ../shared/data/gait10 --resolution 64 --split val --out @tcp://127.0.0.1:5556 &\n"
    "  doppel-validator train --in '>tcp://127.0.0.1:5555' --val '>tcp://127.0.0.1:5556' --judge runs/judge\n"
    "  doppel-validator classify --judge runs/judge --data runs/generated --report runs/generated/identity.json\n"
    "  doppel-validator classify --judge runs/judge --in '>tcp://127.0.0.1:5557'\n"
    "\n"
    "train:    --in EP --judge DIR [--val EP] [--steps N (1500)] [--lr 1e-3] [--warmup W] [--weight-decay 0.01]\n"
    "          [--clip 1.0] [--block-out-channels 32,64,128,128] [--dropout 0.1] [--augment]\n"
    "          [--save-every 500] [--metrics FILE] [--timeout S] [--seed S] [--threads N]\n"
    "          the user classifier (judge) on a stream of real spectrograms; batch size is the stream's;\n"
    "          with --val, per-user accuracy on the val stream (stdout and DIR/val.json)\n"
    "classify: --judge DIR (--in EP | --data DIR) [--report FILE.json] [--resolution R] [--batch 64]\n"
    "          [--timeout S] [--threads N]\n"
    "          per-user accuracy, mean P(true user) and top confusion of a stream or an ID_<n>/ folder;\n"
    "          users are matched by name\n"
    "score:    --judge DIR --real SRC --generated SRC [--real-val SRC] [--report DIR] [--k 3]\n"
    "          [--min-accuracy 0.8] [--max-fid 50] [--max-fid-ratio 3] [--min-is 2]\n"
    "          identity (accuracy, top-3, P(true) > 0.8, confusion) and realism (FID, KID,\n"
    "          precision/recall, inception score in the judge's feature space) of a generated set,\n"
    "          next to the same figures for held-out real data; SRC a folder or a stream\n"
    "common:   --help (also after a command), --version, --device cpu|cuda|auto\n"
    "exit status: 0 done, 1 runtime error, 2 usage\n";

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(USAGE, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) return cli_print_version(TOOL), EXIT_OK;
    if (!strcmp(argv[1], "train")) return validator_train_main(argc - 1, argv + 1);
    if (!strcmp(argv[1], "classify")) return validator_classify_main(argc - 1, argv + 1);
    if (!strcmp(argv[1], "score")) return validator_score_main(argc - 1, argv + 1);
    cli_usage_error(TOOL, "unknown command '%s' (train, classify, score)", argv[1]);
}
