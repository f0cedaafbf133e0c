// doppel-diffuser: trains the user-conditioned latent UNet (train.c) and, optionally, a user
// classifier on noisy latents for classifier guidance (train_classifier.c), generates latents for
// chosen users with classifier-free (and classifier) guidance (sample.c), and serves generation
// requests (serve.c).
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "net/zsock.h"
#include "diffuser.h"

static const char *USAGE =
    "usage: doppel-diffuser train|train-classifier|sample|serve [options]   (doppel-diffuser <command> --help for each)\n"
    "\n"
    "examples:\n"
    "  doppel-encoder encode --vae runs/vae --in '>tcp://127.0.0.1:5555' --cache runs/latents.safetensors\n"
    "  doppel-diffuser train --cache runs/latents.safetensors --unet runs/unet --preset small --steps 3000 --vae runs/vae\n"
    "  doppel-diffuser train-classifier --cache runs/latents.safetensors --classifier runs/classifier --unet runs/unet\n"
    "  doppel-diffuser sample --unet runs/unet --users all --per-user 16 --guidance 2 --out @tcp://127.0.0.1:5556 &\n"
    "  doppel-decoder --vae runs/vae --in tcp://127.0.0.1:5556 --png runs/generated\n"
    "\n"
    "train             UNet2DModel with a class embedding of users + 1 rows (the last: 'no user', learned\n"
    "                  through per-sample condition dropout) on latents from a cache or a live stream\n"
    "train-classifier  a time-conditioned user classifier on noisy latents, for sample --classifier\n"
    "sample            DDPM / DDIM / DPM-Solver++ 2M with classifier-free guidance (and optional classifier\n"
    "                  guidance); per-sample seeds\n"
    "serve             a long-running generator answering requests from other hosts\n"
    "common: --help, --version\n";

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(USAGE, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) return cli_print_version(TOOL), EXIT_OK;
    zsock_install_signals();
    if (!strcmp(argv[1], "train")) return diffuser_train_main(argc - 1, argv + 1);
    if (!strcmp(argv[1], "train-classifier")) return diffuser_train_classifier_main(argc - 1, argv + 1);
    if (!strcmp(argv[1], "sample")) return diffuser_sample_main(argc - 1, argv + 1);
    if (!strcmp(argv[1], "serve")) return diffuser_serve_main(argc - 1, argv + 1);
    cli_usage_error(TOOL, "unknown command '%s' (train, train-classifier, sample, serve)", argv[1]);
}
