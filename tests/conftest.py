import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')      # tests never touch the network
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')
