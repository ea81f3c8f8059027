"""The course at a glance: one line per notebook in `nbs/`.

    python benchmarks/course_stats.py            # the table, then any absolute path found
    python benchmarks/course_stats.py --check    # exit 1 if a limit below is broken
    python benchmarks/course_stats.py --repo ../other_checkout   # another checkout of the project (before and after)

Columns:
- `words`: words of markdown prose (cells of type markdown; code fences, HTML tags and link targets left out).
- `cells`: code cells, `#| hide` ones included; `med`/`max`: their median and longest length in lines
  (blank lines and the `#|` directive lines not counted).
- `>9`: the share of code cells over 9 lines.
- `pics`: pictures a cell computed, kept in the notebook: each output that carries `image/png`, `image/jpeg`,
  `image/gif` or `image/svg+xml` counts one, and so does each `<img` or `<video` tag in an output's
  `text/html` (how `show_video` and matplotlib animations display). Pictures in markdown (`![...]`) do not count.

Absolute paths are looked for in the notebooks (sources and outputs), the package, `benchmarks/` (results
included), `tests/` and `README.md`: the folder that holds the repo, a machine's top-level folders (`_ROOTS`:
home, root, tmp, work, Users, mnt, content) and Windows drives. Left out: a line of code that makes a temporary
folder (`tempfile`, `mkdtemp`, `TemporaryDirectory`, `tmp_path`), and in a cell's output the temporary folders such
code made (`tmp` and eight characters, as `tempfile` names them): they exist only while the cell runs.
"""
from __future__ import annotations
import argparse, json, re, statistics, sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NBS = REPO/'nbs'
LESSON = re.compile(r'^\d\d_')          # 00_core ... 13_real_scale; appendices are 08a, 08b, 10a
LIMITS = dict(max_lines=40, median=8, pics=3, words=2000, index_words=800)

_IMG_MIMES = ('image/png', 'image/jpeg', 'image/gif', 'image/svg+xml')
_HTML_PIC = re.compile(r'<(img|video)\b', re.I)
_ROOTS = ('home', 'root', 'tmp', 'work', 'Users', 'mnt', 'content')      # top folders of machines, as /NAME/
_ABS = [f'/{name}/' for name in _ROOTS] + [r'[A-Za-z]:\\\\']
_ABS_RE = re.compile('|'.join([re.escape(str(REPO)), *_ABS]))


def _use_repo(repo):
    "Measure the checkout at `repo` (its folder is one of the absolute paths looked for)."
    global REPO, NBS, _ABS_RE
    REPO = Path(repo).resolve(); NBS = REPO/'nbs'
    _ABS_RE = re.compile('|'.join([re.escape(str(REPO)), *_ABS]))
_TEMP_OK = re.compile(r'tempfile|mkdtemp|TemporaryDirectory|tmp_path|gettempdir')
_TEMP_DIR = re.compile('/' + 'tmp' + r'/tmp\w{8}(?=[/\'"\s)]|$)')   # a folder tempfile made (spelt so this file names no machine path)


def _src(cell):
    s = cell.get('source', '')
    return ''.join(s) if isinstance(s, list) else s


def prose_words(md: str) -> int:
    "Words of markdown prose: code fences, inline code spans kept (they are words), HTML tags and link targets out."
    md = re.sub(r'```.*?```', ' ', md, flags=re.S)
    md = re.sub(r'<[^>]+>', ' ', md)
    md = re.sub(r'\]\([^)]*\)', '] ', md)
    return len(re.findall(r"[A-Za-z0-9][\w'’.,-]*", md))


def code_lines(src: str) -> int:
    return sum(1 for l in src.splitlines() if l.strip() and not l.lstrip().startswith('#|'))


def pictures(cell) -> int:
    n = 0
    for o in cell.get('outputs', []):
        data = o.get('data', {})
        n += sum(m in data for m in _IMG_MIMES)
        html = data.get('text/html', '')
        n += len(_HTML_PIC.findall(''.join(html) if isinstance(html, list) else html))
    return n


def abs_paths(text: str, where: str, output: bool = False):
    "(where, line) for each line of `text` naming an absolute path, outside lines that make temporary folders (and, in outputs, the folders they made)."
    return [(where, l.strip()[:160]) for l in text.splitlines()
            if _ABS_RE.search(_TEMP_DIR.sub('', l) if output else l) and not _TEMP_OK.search(l)]


def nb_stats(path: Path) -> dict:
    nb = json.loads(path.read_text())
    cells = nb['cells']
    code = [c for c in cells if c['cell_type'] == 'code']
    lens = [code_lines(_src(c)) for c in code]
    found = []
    for c in cells:
        cid = c.get('id', '?')
        found += abs_paths(_src(c), f'{path.name} {cid} source')
        for o in c.get('outputs', []):
            txt = json.dumps(o)
            found += abs_paths(txt.replace('\\n', '\n'), f'{path.name} {cid} output', output=True)
    return dict(name=path.stem, words=sum(prose_words(_src(c)) for c in cells if c['cell_type'] == 'markdown'),
                cells=len(code), med=statistics.median(lens) if lens else 0, max=max(lens, default=0),
                over9=sum(l > 9 for l in lens)/max(len(lens), 1),
                pics=sum(pictures(c) for c in code), abs=found)


def file_paths():
    "Absolute paths in the committed files outside the notebooks."
    found = []
    for p in [REPO/'README.md', *sorted((REPO/'vb_nb').rglob('*')), *sorted((REPO/'benchmarks').rglob('*')),
              *sorted((REPO/'tests').rglob('*'))]:
        if not p.is_file() or p.suffix not in ('.py', '.json', '.md', '.txt', '.csv', '.cfg', '.ini', '.yaml'):
            continue
        if p.name == Path(__file__).name and p.parent.name == 'benchmarks': continue   # this file names the patterns it looks for
        found += abs_paths(p.read_text(errors='replace'), str(p.relative_to(REPO)))
    return found


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--check', action='store_true', help='exit 1 if a limit is broken')
    ap.add_argument('--repo', default=None, help='the checkout to measure (default: this one)')
    args = ap.parse_args(argv)
    if args.repo: _use_repo(args.repo)
    rows = [nb_stats(p) for p in sorted(NBS.glob('*.ipynb'))]
    print(f"{'notebook':<18}{'words':>6}{'cells':>6}{'med':>6}{'max':>5}{'>9':>6}{'pics':>5}{'abs':>5}")
    bad = []
    for r in rows:
        print(f"{r['name']:<18}{r['words']:>6}{r['cells']:>6}{r['med']:>6g}{r['max']:>5}{r['over9']:>6.0%}"
              f"{r['pics']:>5}{len(r['abs']):>5}")
        lesson = bool(LESSON.match(r['name']))
        wlim = LIMITS['index_words'] if r['name'] == 'index' else LIMITS['words']
        if r['words'] > wlim: bad.append(f"{r['name']}: {r['words']} words > {wlim}")
        if r['max'] > LIMITS['max_lines']: bad.append(f"{r['name']}: a code cell of {r['max']} lines")
        if lesson and r['med'] > LIMITS['median']: bad.append(f"{r['name']}: median code cell {r['med']:g} lines")
        if lesson and r['pics'] < LIMITS['pics']: bad.append(f"{r['name']}: {r['pics']} pictures")
    found = [a for r in rows for a in r['abs']] + file_paths()
    print(f"\nabsolute paths: {len(found)}")
    for where, line in found: print(f'  {where}: {line}')
    bad += [f'absolute path in {w}' for w, _ in found]
    if args.check:
        print(f"\nlimits broken: {len(bad)}")
        for b in bad: print('  ' + b)
        return 1 if bad else 0
    return 0


if __name__ == '__main__':
    sys.exit(main())
