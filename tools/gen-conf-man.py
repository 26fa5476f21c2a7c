#!/usr/bin/env python3
"""Write man/postern.conf.5 from README.md's configuration table, so the
manual page and the README (which the tests check against check-config)
never disagree. Run by `make man`; the test suite checks it is current."""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def roff(text):
    text = text.replace("\\", "\\e")
    text = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\1", text)
    return text


def main():
    readme = open(os.path.join(ROOT, "README.md")).read()
    start = readme.index("| key | meaning | default |")
    table = readme[start:readme.index("\n\n", start)].splitlines()[2:]
    out = [
        '.\\" Generated from README.md by tools/gen-conf-man.py: edit the README, then run make man.',
        ".TH POSTERN.CONF 5 2026-12-01 Postern",
        ".SH NAME",
        "postern.conf \\- Postern mail gateway configuration",
        ".SH SYNOPSIS",
        "/etc/postern/postern.conf",
        ".SH DESCRIPTION",
        "One \\fIkey\\fR = \\fIvalue\\fR per line; \\fB#\\fR starts a comment. An unknown key, a bad value",
        "or a key given twice is an error naming the file and line (only \\fIplugin\\fR.\\fIkey\\fR options",
        "repeat). Check a file with \\fBposternd -t\\fR or \\fBpostern check-config\\fR, which prints every",
        "key with its effective value. A reload (SIGHUP or \\fBpostern reload\\fR) applies a changed file",
        "to new sessions and deliveries, except for the keys that need a restart (see \\fBposternd\\fR(8)).",
        ".SH KEYS",
    ]
    for row in table:
        cells = [c.strip().replace("\0", "|") for c in row.replace("\\|", "\0").strip().strip("|").split("|")]
        if len(cells) < 3:
            continue
        key, meaning, default = cells[0], " | ".join(cells[1:-1]), cells[-1]
        out += [".TP", roff(key), roff(meaning) + ".", "Default: " + roff(default) + "."]
    out += [".SH SEE ALSO", "\\fBposternd\\fR(8), \\fBpostern\\fR(1), \\fBpostern-plugin\\fR(3), \\fBpostern-lua\\fR(7)"]
    text = "\n".join(out) + "\n"
    path = os.path.join(ROOT, "man", "postern.conf.5")
    if len(sys.argv) > 1 and sys.argv[1] == "--check":
        current = open(path).read() if os.path.exists(path) else ""
        if current != text:
            print("man/postern.conf.5 is out of date: run make man", file=sys.stderr)
            return 1
        return 0
    with open(path, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
