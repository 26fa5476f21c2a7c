#!/usr/bin/env python3
"""check-layers.py - gateway/ is in folders by role, lowest first; a file may
include headers of its own folder and of lower ones only (as Postfix keeps
src/util from including src/global). lua/ sits with chain/. plugins/ holds
the plugin ABI and the formats the archive plugin shares: anyone may include
those. Prints each include that goes up and exits 1 if there is one."""
import glob
import os
import re
import sys

ORDER = ["util", "core", "events", "chain", "mta", "queue", "smtpd", "archive", "admin", "cli", "bin"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def folder_of(path):
    rel = os.path.relpath(path, ROOT)
    if rel.startswith("lua/"):
        return "chain"
    parts = rel.split("/")
    return parts[1] if parts[0] == "gateway" and len(parts) > 2 else None


def main():
    files = glob.glob(os.path.join(ROOT, "gateway", "*", "*.[ch]")) + glob.glob(os.path.join(ROOT, "lua", "*.[ch]"))
    header_home = {}
    for f in files:
        if f.endswith(".h"):
            header_home[os.path.basename(f)] = folder_of(f)
    stray = [f for f in glob.glob(os.path.join(ROOT, "gateway", "*.[ch]"))]
    bad = ["%s: not in a folder by role" % os.path.relpath(f, ROOT) for f in stray]
    for f in files:
        mine = folder_of(f)
        if mine not in ORDER:
            bad.append("%s: folder %s is not in the order %s" % (os.path.relpath(f, ROOT), mine, " < ".join(ORDER)))
            continue
        with open(f) as src:
            for n, line in enumerate(src, 1):
                m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
                if not m:
                    continue
                home = header_home.get(os.path.basename(m.group(1)))
                if home and ORDER.index(home) > ORDER.index(mine):
                    bad.append("%s:%d: %s (%s) includes %s from %s, a higher folder" %
                               (os.path.relpath(f, ROOT), n, mine, os.path.basename(f), m.group(1), home))
    for b in bad:
        print("check-layers: " + b)
    if not bad:
        print("check-layers: %d files, every include goes down or sideways (%s)" % (len(files), " < ".join(ORDER)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
