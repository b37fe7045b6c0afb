#!/usr/bin/env python3
"""The README's C example must be examples/save-load.c, byte for byte (TAP)."""
import re
import sys

src = sys.argv[1]
readme = open(f"{src}/README.md").read()
example = open(f"{src}/examples/save-load.c").read()
blocks = re.findall(r"```c\n(.*?)```", readme, re.S)
ok = example in blocks
print(("ok" if ok else "not ok") + " 1 README's C example is examples/save-load.c")
print("1..1")
sys.exit(0 if ok else 1)
