"""Pilot (scripts/pilot_vit_a.sh): each transferred vit_a against its CE control, paired on the 10,000 test images.

McNemar exact test on the images one of the two gets right and the other wrong; writes studies/zoo/pilot/paired_vs_ce.json.
Needs the pilot exports and polish round 3 in .zoo_cache/ (not committed).
"""
import json
from pathlib import Path

import torch
torch.set_num_threads(1)
from timm_gkt.data import create_image_dataset
from timm_gkt.evaluation import predict
from timm_gkt.models import load_model
from timm_gkt.metrics import mcnemar_p_value
specs = {'ce': '.zoo_cache/polish/vit_a/round3/export'}
for record in sorted(Path('studies/zoo/pilot').glob('vit_a_r2__*.json')):  # every finished pilot run
    _, teacher, method = record.stem.split('__')
    specs[f'{method}_{teacher}'] = f'.zoo_cache/pilot/{record.stem}/export'
ds = create_image_dataset('torch/fashion_mnist', 'data', 'test')
ms = {k: load_model(f'local-dir:{v}') for k, v in specs.items()}
preds, y = predict([m.model for m in ms.values()], [m.preprocessing for m in ms.values()], ds, progress=False)
right = {k: (p == y) for k, p in zip(ms, preds)}
out = {}
for k in ms:
    if k == 'ce': continue
    g = int((right[k] & ~right['ce']).sum()); l = int((~right[k] & right['ce']).sum())
    out[k] = {'minus_ce_points': round(100 * (g - l) / len(y), 2), 'right_only_here': g, 'right_only_ce': l, 'p': mcnemar_p_value(g, l)}
    print(k, 'top1', round(100 * right[k].double().mean().item(), 2), out[k], flush=True)
print('ce top1', round(100 * right['ce'].double().mean().item(), 2))
json.dump(out, open('studies/zoo/pilot/paired_vs_ce.json', 'w'), indent=1)
