# Shell helpers shared by bench/*.sh. The caller defines die() and
# ready_timeout_s, and sets pg_dir (a scripts/pg-temp dir) before pg_cpu.

free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

http_code() {  # URL -> status code (000 when nothing answers); https: any certificate
  curl -sk -o /dev/null -w '%{http_code}' --max-time 3 "$1" || true
}

wait_ready() {  # URL PID LOG
  local deadline=$((SECONDS + ready_timeout_s))
  while [ "$(http_code "$1/readyz")" != 200 ]; do
    kill -0 "$2" 2>/dev/null || { tail -n 30 "$3" >&2; die "node at $1 exited while starting; log: $3"; }
    [ $SECONDS -lt $deadline ] || { tail -n 30 "$3" >&2; die "$1/readyz not 200 after ${ready_timeout_s}s; log: $3"; }
    sleep 0.5
  done
}

# CPU seconds of PostgreSQL: the postmaster, its children, and the children
# that exited (cutime, cstime).
pg_cpu() {
  python3 - "$pg_dir/data/postmaster.pid" <<'EOF'
import os, sys
tick = os.sysconf("SC_CLK_TCK")
def stat(pid):
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    return s[s.rfind(")") + 2:].split()   # from field 3 (state) on
pm = int(open(sys.argv[1]).readline())
f = stat(pm)
total = sum(int(x) for x in f[11:15])     # utime stime cutime cstime
for d in os.listdir("/proc"):
    if d.isdigit():
        c = stat(d)
        if c is not None and int(c[1]) == pm:
            total += int(c[11]) + int(c[12])
print(total / tick)
EOF
}
