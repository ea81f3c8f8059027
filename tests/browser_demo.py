"""The widget demo (nbs/12_demo.ipynb) in a real browser: JupyterLab in headless Chromium, driven by Playwright.

Not part of CI (pytest does not collect this file: its name does not start with `test_`): the browser and its
driver take minutes to install. It opens the demo notebook in JupyterLab, runs it, checks that no kernel dialog
opens, presses Generate, waits for the video, and writes

- nbs/images/demo.jpg: a picture of the finished app (the demo notebook shows it), under 150 KB;
- benchmarks/results/demo/browser_demo.json: the seconds from the click to the video, the steps and frames the app
  used, how often the progress bar moved meanwhile, and the machine's CPU count and load (the time depends on both).
  The demo notebook reads it and checks it against the app's defaults; it holds no date (git keeps when it changed).

Setup (Debian; any Chromium and a Python with Playwright will do, no browser download is needed):

    apt-get install -y chromium
    python3 -m venv .pw && .pw/bin/pip install playwright pillow

Run from the repository root, naming the project's Python environment (the one with jupyterlab and vb_nb's requirements):

    OMP_NUM_THREADS=1 .pw/bin/python tests/browser_demo.py --venv .venv

The kernel inherits the environment. On a small, busy machine OMP_NUM_THREADS=1 matters: the toy model gains nothing
from several threads, and their waiting for each other made one video take minutes instead of seconds.
"""
import argparse, json, os, shutil, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run']


def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def demo_copy(folder: Path) -> Path:
    "The demo notebook up to the cell that shows the app (the checks after it need no browser), in `folder`."
    nb = json.loads((ROOT/'nbs'/'12_demo.ipynb').read_text())
    last = next(i for i, c in enumerate(nb['cells']) if c['cell_type'] == 'code' and ''.join(c['source']).strip().endswith('Demo().ui'))
    nb['cells'] = nb['cells'][:last + 1]
    path = folder/'12_demo.ipynb'; path.write_text(json.dumps(nb)); return path


def start_lab(venv: Path, folder: Path, port: int) -> subprocess.Popen:
    "JupyterLab on 127.0.0.1 without a token, serving `folder`, with news and update checks off; returns once it answers."
    settings = folder/'.settings'/'@jupyterlab'/'apputils-extension'
    settings.mkdir(parents=True)
    (settings/'notification.jupyterlab-settings').write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'HF_HUB_OFFLINE': '1', 'JUPYTER_CONFIG_DIR': str(folder/'.jupyter'),
           'JUPYTERLAB_SETTINGS_DIR': str(folder/'.settings'), 'JUPYTERLAB_WORKSPACES_DIR': str(folder/'.workspaces')}
    lab = subprocess.Popen([str(venv/'bin'/'jupyter'), 'lab', '--no-browser', '--ip', '127.0.0.1', '--port', str(port),
                            '--IdentityProvider.token=', '--ServerApp.password=', f'--ServerApp.root_dir={folder}',
                            *(['--allow-root'] if os.geteuid() == 0 else [])],
                           env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=open(folder/'lab.log', 'w'))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try: urllib.request.urlopen(f'http://127.0.0.1:{port}/api', timeout=2); return lab
        except OSError: time.sleep(0.5)
    lab.terminate(); raise RuntimeError("JupyterLab did not answer within 120 s:\n" + (folder/'lab.log').read_text()[-2000:])


def run(venv: Path, chromium: str, out: Path, results: Path, timeout: float):
    from playwright.sync_api import sync_playwright
    from PIL import Image
    folder = Path(tempfile.mkdtemp(prefix='vb_nb_browser_'))
    port, lab = free_port(), None
    try:
        demo_copy(folder)
        lab = start_lab(venv, folder, port)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
            page = browser.new_page(viewport={'width': 1500, 'height': 950})
            page.goto(f'http://127.0.0.1:{port}/lab/tree/12_demo.ipynb', timeout=120_000)
            page.wait_for_selector('.jp-NotebookPanel .jp-Cell', timeout=120_000)
            page.wait_for_timeout(3000)                                     # a kernel dialog, if any, opens by now
            assert page.locator('.jp-Dialog').count() == 0, 'a dialog opened: ' + page.locator('.jp-Dialog').inner_text()
            page.locator('.jp-NotebookPanel .jp-Notebook').click()
            page.keyboard.press('Escape')                                   # command mode
            page.get_by_role('menuitem', name='Run', exact=True).click()
            page.get_by_text('Run All Cells', exact=True).click()
            button = page.locator('.jp-OutputArea-output button.jupyter-button', has_text='Generate')
            button.wait_for(timeout=300_000)
            app = page.locator('.jp-OutputArea-output .widget-hbox').filter(has=page.locator('button', has_text='Generate')).first
            app.scroll_into_view_if_needed()
            steps = int(page.locator('.widget-slider', has_text='steps').locator('.widget-readout').inner_text())
            frames = int(page.locator('.widget-slider', has_text='frames').locator('.widget-readout').inner_text())
            video = app.locator('img[src^="data:image/gif"]')
            bar = app.locator('.progress-bar')
            t0 = time.monotonic(); button.click()
            widths, deadline = set(), t0 + timeout
            while video.count() == 0:                                       # the progress bar, sampled while we wait
                if time.monotonic() > deadline: raise TimeoutError(f'no video {timeout:.0f} s after the click')
                widths.add(bar.first.get_attribute('style') if bar.count() else None); time.sleep(0.1)
            seconds = time.monotonic() - t0
            page.wait_for_function('b => !b.disabled', arg=button.element_handle(), timeout=60_000)
            texts = [t.strip() for t in app.locator('.widget-html').all_inner_texts()]
            status = next((t for t in texts if t and 'download' not in t), '')
            page.wait_for_timeout(500)
            png = folder/'demo.png'; app.screenshot(path=str(png))
            browser.close()
        out.mkdir(parents=True, exist_ok=True)
        im = Image.open(png).convert('RGB')
        for quality in (85, 75, 65, 50):
            im.save(out/'demo.jpg', quality=quality, optimize=True)
            if (out/'demo.jpg').stat().st_size < 150_000: break
        chromium_version = subprocess.run([chromium, '--version'], capture_output=True, text=True).stdout.strip()
        result = dict(click_to_video_s=round(seconds, 1), steps=steps, frames=frames, progress_updates=len(widths - {None}),
                      status=status, cpus=os.cpu_count(), omp_num_threads=os.environ.get('OMP_NUM_THREADS'),
                      load_average=round(os.getloadavg()[0], 1), browser=chromium_version)
        results.mkdir(parents=True, exist_ok=True)
        (results/'browser_demo.json').write_text(json.dumps(result, indent=1) + '\n')
        print(json.dumps(result, indent=1)); print(f"wrote {out/'demo.jpg'} ({(out/'demo.jpg').stat().st_size // 1024} KB, {im.size[0]}x{im.size[1]})")
    finally:
        if lab is not None:
            lab.terminate()
            try: lab.wait(30)
            except subprocess.TimeoutExpired: lab.kill()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--venv', type=Path, default=ROOT/'.venv', help='the Python environment with jupyterlab and vb_nb (default: .venv)')
    ap.add_argument('--chromium', default=shutil.which('chromium') or '/usr/bin/chromium')
    ap.add_argument('--out', type=Path, default=ROOT/'nbs'/'images', help='where the picture demo.jpg goes')
    ap.add_argument('--results', type=Path, default=ROOT/'benchmarks'/'results'/'demo', help='where browser_demo.json goes')
    ap.add_argument('--timeout', type=float, default=600, help='seconds to wait for the video after the click')
    a = ap.parse_args()
    if not (a.venv/'bin'/'jupyter').exists(): sys.exit(f"{a.venv/'bin'/'jupyter'} not found: name the project's environment with --venv")
    run(a.venv.resolve(), a.chromium, a.out, a.results, a.timeout)
