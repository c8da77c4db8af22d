"""`z1 finetune`: data checks, run settings and manifests, the training worker, progress and fuse."""
