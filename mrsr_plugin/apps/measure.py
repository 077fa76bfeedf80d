"""Peak memory of a command run in a fresh process, for the benchmarks (``scripts/benchmark_prepare.py``,
``scripts/benchmark_infer_memory.py``)."""
import os
import subprocess
import threading
import time


def _sample_anon(pid, peak, stop):
    """Keep the largest RssAnon (bytes) of process ``pid`` in ``peak[0]`` until ``stop`` is set."""
    while not stop.is_set():
        try:
            with open(f'/proc/{pid}/status') as f:
                for line in f:
                    if line.startswith('RssAnon:'):
                        peak[0] = max(peak[0], int(line.split()[1]) * 1024)
        except OSError:  # not Linux, or the process has ended
            return
        stop.wait(0.02)


def run_measured(command, cwd=None, env=None):
    """Run ``command`` (stdout and stderr merged) and measure it.

    Returns:
        tuple: (wall seconds, peak RSS bytes: ``ru_maxrss`` of that child alone from ``os.wait4``, peak anonymous
        resident bytes: ``RssAnon`` of ``/proc/PID/status`` sampled every 20 ms, i.e. the heap, arrays and tensors
        without the file-backed pages of shared libraries that the RSS also counts (0 where there is no /proc),
        output).

    Raises:
        SystemExit: The command failed; its output is in the message.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak, stop = [0], threading.Event()
    sampler = threading.Thread(target=_sample_anon, args=(proc.pid, peak, stop), daemon=True)
    sampler.start()
    output = proc.stdout.read().decode(errors='replace')
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f'{" ".join(command)} failed (exit {proc.returncode}):\n{output}')
    return wall, usage.ru_maxrss * 1024, peak[0], output  # Linux: ru_maxrss in KiB
