"""Two network namespaces joined by a veth pair shaped with tbf: the link
that scripts/bench (scenario 5), scripts/bench-postcopy and
tests/postcopy/test_postcopy_netns.py put between source and destination.

Each caller names its own namespaces, devices and addresses (dicts keyed
"src" and "dst"), so that runs of different programs never share a link.
This kernel has no netem: the link is rate-limited, without added delay.
"""
import subprocess

SHAPE_1GBIT = ["tbf", "rate", "1gbit", "burst", "256kb", "latency", "20ms"]


def _sh(*argv):
    return subprocess.run(list(argv), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)


def remove(ns):
    for name in ns.values():
        _sh("ip", "netns", "del", name)


def create(ns, dev, ip, shape=SHAPE_1GBIT):
    """Make the link (removing a leftover one first). Returns None, or the
    step that failed and the system's reason; a failed link is removed."""
    remove(ns)
    steps = [("ip", "netns", "add", ns["src"]), ("ip", "netns", "add", ns["dst"]),
             ("ip", "link", "add", dev["src"], "netns", ns["src"], "type", "veth",
              "peer", "name", dev["dst"], "netns", ns["dst"])]
    for side in ("src", "dst"):
        steps += [("ip", "-n", ns[side], "addr", "add", ip[side] + "/24", "dev",
                   dev[side]),
                  ("ip", "-n", ns[side], "link", "set", "lo", "up"),
                  ("ip", "-n", ns[side], "link", "set", dev[side], "up"),
                  ("tc", "-n", ns[side], "qdisc", "add", "dev", dev[side],
                   "root", *shape)]
    for s in steps:
        r = _sh(*s)
        if r.returncode:
            remove(ns)
            return f"{' '.join(s)}: {r.stderr.strip()}"
    return None
