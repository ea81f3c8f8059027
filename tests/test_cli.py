"Command-line entry points, run as a user would run them: as separate processes."
import subprocess, sys
from pathlib import Path


def run(*args, **kw):
    return subprocess.run([*args], capture_output=True, text=True, timeout=300, **kw)


def test_posenc_cli_writes_png(tmp_path):
    out = tmp_path/'sub'/'pe.png'
    r = run(sys.executable, '-c', 'from vb_nb.posenc import main; main()', '--out', str(out), '--dim', '32')
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert [p.name for p in out.parent.iterdir()] == ['pe.png']        # no temporary file left behind


def test_posenc_cli_rejects_odd_dim(tmp_path):
    r = run(sys.executable, '-c', 'from vb_nb.posenc import main; main()', '--out', str(tmp_path/'pe.png'), '--dim', '31')
    assert r.returncode != 0 and 'even' in r.stderr
    assert not (tmp_path/'pe.png').exists()
