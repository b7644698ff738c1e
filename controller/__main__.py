"""`python -m controller`: the command-line entry point, as the kube-ecr-cleanup-controller script."""

from controller.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
