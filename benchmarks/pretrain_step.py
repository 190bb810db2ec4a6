"""Time the whole pre-training step per method (same as `vitssl benchmark step`; options: --help).

The benchmark lives in the package (`vitssl.bench.pretrain_step`) so the CLI exposes it too.
"""

from vitssl.bench.pretrain_step import main

if __name__ == "__main__":
    main()
