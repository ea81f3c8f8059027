import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')      # tests never touch the network
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')

import pytest


class RunsCode:
    "Unpickling this runs a shell command: what a swapped checkpoint could do."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))


@pytest.fixture
def code_payload(tmp_path):
    "An object whose unpickling would create the returned marker file; a loader that refuses it leaves the marker absent."
    marker = tmp_path/'pwned'
    return RunsCode(marker), marker
