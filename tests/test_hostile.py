"What a user has beside an output is never deleted, and crafted files get a clear error instead of running code or filling memory."
import io, json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest, torch


# ---- the user's hidden files beside an output

USER_HIDDEN = ['.bashrc.original', '.vimrc.20240101', '.env.staging1', '.notes.abcd1234.txt', '.final.old']

def _user_files(d: Path):
    for n in USER_HIDDEN: (d/n).write_text('mine')
    (d/'.mozilla.backup01').mkdir(); (d/'.mozilla.backup01'/'prefs.js').write_text('mine')

def _still_there(d: Path):
    for n in USER_HIDDEN: assert (d/n).read_text() == 'mine', n
    assert (d/'.mozilla.backup01'/'prefs.js').read_text() == 'mine'


def test_writing_a_video_keeps_the_users_hidden_files(tmp_path):
    from vb_nb.core import write_video, remove_stale_temps
    _user_files(tmp_path)
    write_video(np.zeros((2, 16, 16, 3), np.uint8), tmp_path/'video.mp4')
    _still_there(tmp_path)
    assert remove_stale_temps(tmp_path) == []
    _still_there(tmp_path)


def test_writing_a_model_folder_keeps_the_users_hidden_files(tmp_path):
    from vb_nb.core import atomic_folder
    _user_files(tmp_path)
    for i in range(2):
        with atomic_folder(tmp_path/'final') as t: (t/'config.json').write_text(str(i))
    _still_there(tmp_path)
    assert (tmp_path/'final'/'config.json').read_text() == '1'


def test_a_killed_writes_temporary_is_still_swept(tmp_path):
    from vb_nb.core import remove_stale_temps
    kill = f"from vb_nb.core import atomic_path; import os; t = atomic_path({str(tmp_path/'out.mp4')!r}).__enter__(); t.write_text('half'); os._exit(9)"
    assert subprocess.run([sys.executable, '-c', kill]).returncode == 9
    (left,) = os.listdir(tmp_path)
    _user_files(tmp_path)
    assert [p.name for p in remove_stale_temps(tmp_path)] == [left]
    _still_there(tmp_path)


# ---- weights are written with the umask's permissions, as configs are

def test_saved_weights_are_readable_as_configs_are(tmp_path):
    from safetensors.torch import save_file
    from vb_nb.core import atomic_folder, atomic_path
    mask = os.umask(0o022); os.umask(0o022)
    try:
        with atomic_folder(tmp_path/'model') as t:
            save_file({'w': torch.zeros(2)}, str(t/'diffusion_pytorch_model.safetensors')); (t/'config.json').write_text('{}')
        with atomic_path(tmp_path/'layers.safetensors') as t: save_file({'w': torch.zeros(2)}, str(t))
        modes = {p.name: p.stat().st_mode & 0o777 for p in [*(tmp_path/'model').iterdir(), tmp_path/'layers.safetensors']}
        assert set(modes.values()) == {0o644}, modes
    finally: os.umask(mask)


# ---- image prompts: only the formats an image prompt comes in; never Ghostscript

EPS = b'%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n'

@pytest.fixture
def ghostscript_spy(monkeypatch):
    from PIL import EpsImagePlugin
    calls = []
    def spy(*a, **k): calls.append(a); raise OSError('Ghostscript was called')
    monkeypatch.setattr(EpsImagePlugin, 'Ghostscript', spy)
    return calls


def test_an_eps_named_png_is_refused_by_generate_without_ghostscript(tmp_path, ghostscript_spy):
    from vb_nb.sample import load_image_prompt
    (tmp_path/'cat.png').write_bytes(EPS)
    with pytest.raises(ValueError, match='PNG, JPEG, GIF, BMP or WebP'): load_image_prompt(tmp_path/'cat.png')
    assert ghostscript_spy == []


def test_an_eps_upload_is_refused_by_the_demo_without_ghostscript(ghostscript_spy):
    from vb_nb.demo import read_upload
    with pytest.raises(ValueError, match='PNG, JPEG, GIF, BMP or WebP'): read_upload('cat.png', EPS)
    assert ghostscript_spy == []


def test_the_usual_formats_still_open(tmp_path):
    from PIL import Image
    from vb_nb.core import open_image
    from vb_nb.demo import read_upload
    for fmt in ('PNG', 'JPEG', 'GIF', 'BMP', 'WEBP'):
        buf = io.BytesIO(); Image.new('RGB', (16, 16), (200, 30, 30)).save(buf, format=fmt)
        assert open_image(buf.getvalue()).size == (16, 16) and read_upload(f'x.{fmt.lower()}', buf.getvalue()).size == (16, 16)
