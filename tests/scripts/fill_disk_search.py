"""`python -m nas.search` whose disk fills up for real after two new evaluations.

python fill_disk_search.py <filler file on the small disk> <search overrides...>
"""

from __future__ import annotations

import sys

from nas.search.objective_scorer import ObjectiveScorer

FILLER = sys.argv[1]
original, done = ObjectiveScorer.__call__, []


def fill_the_disk_after_two(self, sub):  # type: ignore[no-untyped-def]
    if sub is not None:
        done.append(sub)
        if len(done) == 3:  # two new evaluations stored; before the third is, nothing fits any more
            with open(FILLER, "wb") as f:
                try:
                    while True:
                        f.write(bytes(1 << 16))
                        f.flush()
                except OSError:
                    pass
    return original(self, sub)


ObjectiveScorer.__call__ = fill_the_disk_after_two  # type: ignore[method-assign]

if __name__ == "__main__":
    from nas.search.__main__ import main

    sys.argv = ["nas.search", *sys.argv[2:]]
    main()
