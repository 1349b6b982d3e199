"""The call stacks of a `perf record --call-graph dwarf` of namegate, symbolised (docs/benchmarks.md,
"Profiling"); shared by bench/perf-stages.py and bench/perf-leaf.py.

perf could not read the release binary's symbols from its build-id cache, so frames of the binary are
symbolised here with `nm`; other frames are named by their DSO (libc.so.6, [kernel.kallsyms])."""
import bisect, re, subprocess


def samples(data, binary):
    """Yields (thread name, frames leaf first) for each sample of `data`."""
    nm = subprocess.run(["nm", "-n", "-C", "--defined-only", binary], capture_output=True, text=True).stdout
    addrs, names = [], []
    for line in nm.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            addrs.append(int(parts[0], 16)); names.append(re.sub(r"::h[0-9a-f]{16}$", "", parts[2]))
    # perf prints file offsets for a DSO it could not load: text vaddr = offset + (p_vaddr - p_offset).
    shift = 0
    for l in subprocess.run(["readelf", "-l", "-W", binary], capture_output=True, text=True).stdout.splitlines():
        f = l.split()  # LOAD offset vaddr paddr filesz memsz flags... align
        if len(f) >= 8 and f[0] == "LOAD" and "E" in "".join(f[6:-1]):
            shift = int(f[2], 16) - int(f[1], 16)

    def sym(a):
        i = bisect.bisect_right(addrs, a) - 1
        return names[i] if i >= 0 else "?"

    exe = binary.split("/")[-1]
    out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,ip,dso"], capture_output=True, text=True).stdout
    for s in out.split("\n\n"):
        lines = [l for l in s.strip().splitlines() if l.strip()]
        if not lines:
            continue
        frames = []
        for l in lines[1:]:
            m = re.match(r"\s*([0-9a-f]+)\s+\((.*)\)", l)
            if not m:
                continue
            ip, dso = int(m.group(1), 16), m.group(2)
            frames.append(sym(ip + shift) if exe in dso else dso.split("/")[-1])
        yield lines[0].strip(), frames
