# The guard matters: multiprocessing's "spawn" workers re-import the main module.
from novaops.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
