"""Binary byte units, one home for each: a MiB is 2**20 bytes (what nvidia-smi and torch's counters print)."""

KIB = 2**10
MIB = 2**20
GIB = 2**30
