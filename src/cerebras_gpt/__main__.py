"""`python -m cerebras_gpt ...` (what torchrun launches) is the `cerebras-gpt` command."""

from cerebras_gpt.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
