"""The sweep's stop message is printed when the signal arrives, not when Python next runs.

After a SIGTERM to the whole process group, Ray's core worker in the driver may see its
raylet gone and end the process (exit code 1) while the main thread is still inside a C
call, before Python's own handler runs. The resume command must be on the console anyway.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

CHILD = textwrap.dedent("""
    import hashlib, os, threading
    from starray.tune.signals import StopOnSignal

    with StopOnSignal("resume with `starray tune --resume S`", mark=None):
        # Ray's core worker ending the process a moment after the signal
        threading.Timer(4.0, os._exit, (1,)).start()
        print("ready", flush=True)
        # the main thread is inside one long C call (the GIL released), as in ray.get
        hashlib.pbkdf2_hmac("sha256", b"x", b"salt", 50_000_000)
    print("returned", flush=True)
""")


def test_stop_message_is_printed_while_the_main_thread_is_busy_in_c():
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out  # ended by the "core worker", as in the race
    assert "SIGTERM: stopping the sweep and its local Ray; resume with `starray tune " \
           "--resume S`" in out, out
    assert "returned" not in out


def test_the_handler_still_announces_once_when_python_runs_first():
    child = textwrap.dedent("""
        import os, signal, time
        from starray.tune.signals import StopOnSignal, SweepInterrupted

        try:
            with StopOnSignal("resume with X", mark=None, grace_s=30):
                print("ready", flush=True)
                time.sleep(30)
        except SweepInterrupted as e:
            time.sleep(0.3)  # the reader thread would print a second time by now
            print("interrupted", e.signum, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert out.count("SIGINT: stopping the sweep") == 1, out
    assert f"interrupted {int(signal.SIGINT)}" in out, out
