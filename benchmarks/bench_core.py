"""Core benchmark (issue #2): Loader vs raw memmap gather, vs naive PyTorch, workers, resume, order.

Usage: python benchmarks/bench_core.py [--records 200000] [--repeats 3] ...
(the same as `epochal bench`; every figure is a ratio measured in the same run).
"""

from __future__ import annotations

import sys

from epochal._bench import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
