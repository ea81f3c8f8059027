"The README's main job, run as a user runs it, and the command line's answers to bad input."
import os, subprocess, sys
import numpy as np, pytest
from vb_nb.core import read_video

ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1'}


def cli(*args):
    return subprocess.run([sys.executable, '-c', 'from vb_nb.sample import main; main()', *args],
                          capture_output=True, text=True, env=ENV, timeout=600)


def test_readme_command_writes_a_playable_mp4(tmp_path):
    out = tmp_path/'star.mp4'
    r = cli('--image', 'red_checkered_star', '--prompt', 'a star drifts to the left, then up over green grass', '--out', str(out), '--num-inference-steps', '5')
    assert r.returncode == 0, r.stderr
    frames = read_video(out)
    assert frames.shape == (8, 64, 64, 3) and frames.dtype == np.uint8
    assert frames.std() > 1                                  # not a blank video


def test_bad_inputs_exit_with_a_message(tmp_path):
    r = cli('--image', str(tmp_path/'missing.png'), '--prompt', 'a ball rolls', '--out', str(tmp_path/'x.mp4'))
    assert r.returncode == 2 and 'no such file' in r.stderr
    r = cli('--image', 'orange_dotted_ball', '--prompt', 'something rolls', '--out', str(tmp_path/'x.mp4'))
    assert r.returncode == 2 and 'no known subject' in r.stderr
    r = cli('--image', 'orange_dotted_ball', '--prompt', 'a ball rolls', '--out', str(tmp_path/'x.avi'))
    assert r.returncode == 2 and '.mp4 or .gif' in r.stderr
    r = cli('--image', 'orange_dotted_ball', '--prompt', 'a ball rolls', '--num-frames', '0', '--out', str(tmp_path/'x.mp4'))
    assert r.returncode == 2 and 'num_frames' in r.stderr
    assert not any(tmp_path.iterdir())                      # nothing half-written


def test_no_adapter_makes_the_base_video_without_an_image(tmp_path):
    r = cli('--prompt', 'a ball rolls', '--out', str(tmp_path/'x.mp4'))
    assert r.returncode == 2 and '--image is required' in r.stderr
    out = tmp_path/'base.gif'
    r = cli('--no-adapter', '--prompt', 'a ball moves to the left', '--out', str(out), '--num-inference-steps', '3', '--num-frames', '4')
    assert r.returncode == 0, r.stderr
    assert read_video(out).shape == (4, 64, 64, 3)


def test_steer_follows_the_prompt_or_says_why_not(tmp_path):
    r = cli('--image', 'orange_dotted_ball', '--prompt', 'a ball spins over the sand', '--steer', '--out', str(tmp_path/'x.mp4'))
    assert r.returncode == 2 and 'names none' in r.stderr and not any(tmp_path.iterdir())
    plain, steered = tmp_path/'plain.mp4', tmp_path/'steered.mp4'
    for out, extra in ((plain, ()), (steered, ('--steer',))):
        r = cli('--image', 'orange_dotted_ball', '--prompt', 'a ball moves up over the sand', '--out', str(out), '--num-inference-steps', '3', *extra)
        assert r.returncode == 0, r.stderr
    assert (read_video(plain) != read_video(steered)).any()     # the starting noise, and so the video, differ


# Bad input is answered at once: a short message on stderr, exit status 2, no traceback, nothing generated
# ('denoising' is the progress bar's label) and nothing written.
STAR = ('--image', 'red_checkered_star', '--prompt', 'a star drifts to the left')


def refused(r, *words):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert 'Traceback' not in r.stderr and 'denoising' not in r.stderr, r.stderr[-2000:]
    msg = r.stderr.strip().splitlines()[-1]                 # argparse: usage lines, then "prog: error: ..."
    assert all(w in msg for w in words), msg
    return msg


def test_sizes_have_an_upper_bound(tmp_path):
    out = tmp_path/'x.mp4'
    for flag in ('--width', '--height'):
        msg = refused(cli(*STAR, flag, '100000', '--out', str(out)), flag[2:], 'at most', '512')   # the toy VAE's 4 px per latent: 4 x 128
    refused(cli(*STAR, '--num-frames', '100000', '--out', str(out)), 'num_frames', '32')
    assert not any(tmp_path.iterdir())


def test_output_path_is_checked_before_generating(tmp_path):
    (tmp_path/'a_file').write_text('x')
    refused(cli(*STAR, '--out', str(tmp_path)), 'is a folder')
    refused(cli(*STAR, '--out', str(tmp_path/'x.avi')), '.mp4 or .gif')
    refused(cli(*STAR, '--out', str(tmp_path/'a_file'/'x.mp4')), 'not a folder')
    refused(cli(*STAR, '--out', '/proc/vb_nb_video.mp4'), 'cannot write')
    refused(cli(*STAR, '--out', '/sys/vb_nb/video.mp4'), 'cannot write')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a_file']


def without_dac_override():
    "Drop root's right to write anywhere (CAP_DAC_OVERRIDE, CAP_FOWNER) from the child process before it starts."
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 3): libc.prctl(24, cap, 0, 0, 0)          # PR_CAPBSET_DROP: gone from the bounding set, so from the program run next


def test_read_only_folder_is_refused_before_generating(tmp_path):
    ro = tmp_path/'ro'; ro.mkdir(); ro.chmod(0o555)
    kw = {}
    if os.geteuid() == 0:                                   # root may write into read-only folders: run the command without that right
        kw = dict(preexec_fn=without_dac_override)
        probe = subprocess.run([sys.executable, '-c', f'open({str(ro/"p")!r}, "w")'], capture_output=True, **kw)
        if probe.returncode == 0: pytest.skip('running as root, and cannot drop the right to write into read-only folders')
    r = subprocess.run([sys.executable, '-c', 'from vb_nb.sample import main; main()', *STAR, '--out', str(ro/'x.mp4')],
                       capture_output=True, text=True, env=ENV, timeout=600, **kw)
    refused(r, 'cannot write', str(ro))
    assert not any(ro.iterdir())


def test_missing_folders_are_made(tmp_path):
    out = tmp_path/'new'/'deeper'/'x.gif'
    r = cli(*STAR, '--out', str(out), '--num-inference-steps', '2', '--num-frames', '2', '--refine', 'none')
    assert r.returncode == 0, r.stderr
    assert read_video(out).shape == (2, 64, 64, 3) and [p.name for p in out.parent.iterdir()] == ['x.gif']


def test_bad_devices_are_named(tmp_path):
    refused(cli(*STAR, '--device', 'tpu9', '--out', str(tmp_path/'x.mp4')), "'tpu9'", 'cpu')
    import torch
    if not torch.cuda.is_available(): refused(cli(*STAR, '--device', 'cuda', '--out', str(tmp_path/'x.mp4')), "'cuda'", 'no cuda device')
    else: refused(cli(*STAR, '--device', f'cuda:{torch.cuda.device_count()}', '--out', str(tmp_path/'x.mp4')), 'cuda', 'numbered')
    assert not any(tmp_path.iterdir())


def test_seeds_must_fit_64_bits(tmp_path):
    refused(cli(*STAR, '--seed', str(2**64), '--out', str(tmp_path/'x.mp4')), 'seed', '2**64')
    refused(cli(*STAR, '--seed', '-1', '--out', str(tmp_path/'x.mp4')), 'seed', 'non-negative')
    r = cli(*STAR, '--seed', str(2**64 - 1), '--out', str(tmp_path/'x.gif'), '--num-inference-steps', '1', '--num-frames', '1', '--refine', 'none')
    assert r.returncode == 0, r.stderr


def test_a_long_prompt_is_cut_with_one_short_warning(tmp_path):
    tail = ' '.join(f'word{i}' for i in range(120))           # ~240 CLIP tokens after the subject
    out = tmp_path/'x.gif'
    r = cli('--image', 'red_checkered_star', '--prompt', f'a star drifts to the left over {tail}', '--out', str(out), '--num-inference-steps', '1', '--num-frames', '2')
    assert r.returncode == 0, r.stderr
    warns = [l for l in r.stderr.splitlines() if 'warning' in l.lower()]
    assert len(warns) == 1, r.stderr
    w = warns[0]
    assert '77 CLIP tokens' in w and 'word119' in w and 'director' not in w and len(w) < 300, w
    assert 'word0' not in w.split('dropped')[-1]             # word0 fits in the 77 tokens: not among the dropped words


def test_a_subject_after_77_tokens_is_a_short_error(tmp_path):
    head = ' '.join(f'word{i}' for i in range(2000))
    r = cli('--image', 'red_checkered_star', '--prompt', f'{head} and a star drifts to the left', '--out', str(tmp_path/'x.mp4'))
    msg = refused(r, "'star'", '77 CLIP tokens')
    assert len(r.stderr) < 1500, len(r.stderr)
