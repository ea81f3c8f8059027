"The README's main job, run as a user runs it, and the command line's answers to bad input."
import os, subprocess, sys
import numpy as np
from vb_nb.core import read_video

ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1'}


def cli(*args):
    return subprocess.run([sys.executable, '-c', 'from vb_nb.sample import main; main()', *args],
                          capture_output=True, text=True, env=ENV, timeout=600)


def test_readme_command_writes_a_playable_mp4(tmp_path):
    out = tmp_path/'star.mp4'
    r = cli('--image', 'red_checkered_star', '--prompt', 'a star drifts to the left, then up over green grass', '--out', str(out), '--steps', '5')
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
    r = cli('--image', 'orange_dotted_ball', '--prompt', 'a ball rolls', '--frames', '0', '--out', str(tmp_path/'x.mp4'))
    assert r.returncode == 2 and 'num_frames' in r.stderr
    assert not any(tmp_path.iterdir())                      # nothing half-written


def test_no_adapter_makes_the_base_video_without_an_image(tmp_path):
    r = cli('--prompt', 'a ball rolls', '--out', str(tmp_path/'x.mp4'))
    assert r.returncode == 2 and '--image is required' in r.stderr
    out = tmp_path/'base.gif'
    r = cli('--no-adapter', '--prompt', 'a ball moves to the left', '--out', str(out), '--steps', '3', '--frames', '4')
    assert r.returncode == 0, r.stderr
    assert read_video(out).shape == (4, 64, 64, 3)


def test_steer_follows_the_prompt_or_says_why_not(tmp_path):
    r = cli('--image', 'orange_dotted_ball', '--prompt', 'a ball spins over the sand', '--steer', '--out', str(tmp_path/'x.mp4'))
    assert r.returncode == 2 and 'names none' in r.stderr and not any(tmp_path.iterdir())
    plain, steered = tmp_path/'plain.mp4', tmp_path/'steered.mp4'
    for out, extra in ((plain, ()), (steered, ('--steer',))):
        r = cli('--image', 'orange_dotted_ball', '--prompt', 'a ball moves up over the sand', '--out', str(out), '--steps', '3', *extra)
        assert r.returncode == 0, r.stderr
    assert (read_video(plain) != read_video(steered)).any()     # the starting noise, and so the video, differ
