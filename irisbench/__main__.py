"""``python -m irisbench`` (and ``torchrun --nproc_per_node=N -m irisbench train ...``): the CLI."""

from irisbench.cli import main

if __name__ == "__main__":
    main()
