#!/usr/bin/env python3
"""Write README.md's configuration key table from the table of keys in
gateway/core/config_keys.c (as `postern config-keys` prints it), then
man/postern.conf.5 from the README (tools/gen-conf-man.py). Run by
`make docs`; tests/integration/test_reload.py fails when they differ.
Usage: gen-conf-doc.py BUILD_DIR"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    table = subprocess.run([os.path.join(ROOT, build, "postern"), "config-keys"], capture_output=True, text=True,
                           check=True).stdout.rstrip("\n")
    path = os.path.join(ROOT, "README.md")
    readme = open(path).read()
    start = readme.index("| key | meaning | default |")
    end = readme.index("\n\n", start)
    new = readme[:start] + table + readme[end:]
    if new != readme:
        with open(path, "w") as f:
            f.write(new)
        print("README.md: key table rewritten")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen-conf-man.py")], check=True)


if __name__ == "__main__":
    main()
