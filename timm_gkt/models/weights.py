"""Are a model's weights there? Decided in seconds, without downloading them.

``timm.create_model(..., pretrained=True)`` against an unreachable Hub retries for about a
minute before its traceback (huggingface_hub retries the metadata call with a 60 s timeout
when no local copy exists). Preflight asks instead: the local Hugging Face cache first
(``try_to_load_from_cache``, no network), then, unless ``HF_HUB_OFFLINE`` is set, one HEAD
request per file (``get_hf_file_metadata`` with ``retry_on_errors=False``) under a shared
deadline. ``local-dir:`` folders are checked by parsing config.json and opening the
safetensors header (``safe_open`` maps the file and checks that the header covers it
exactly; no tensor is read).
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsUnavailableError
from .spec import HF_HUB, LOCAL_DIR, ModelSpec, parse_spec

DEFAULT_DEADLINE_S = 4.0
# what timm looks for, in its order (timm.models._hub: safetensors before pickles)
HUB_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')
LOCAL_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin', 'pytorch_model.pth', 'model.pth',
                      'open_clip_model.safetensors', 'open_clip_pytorch_model.safetensors',
                      'open_clip_pytorch_model.bin', 'open_clip_pytorch_model.pth')



@dataclass(frozen=True)
class WeightsCheck:
    """Where the weights of ``spec`` were found: 'cache', 'hub', 'local-dir' or 'none' (random init)."""
    spec: ModelSpec
    where: str
    detail: str = ''
    hub_reachable: bool | None = None  # False: cached, but the Hub did not answer (run offline)


def hub_cache_dir() -> str:
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE


def _unreachable(spec: str, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f'{spec} is not in the Hugging Face cache ({hub_cache_dir()}) and the Hub cannot be reached ({reason}); '
        f'download it once online (HF_HUB_OFFLINE unset), or use local-dir:PATH for a folder with config.json '
        f'and model.safetensors')


def _offline(spec: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f'{spec} is not in the Hugging Face cache ({hub_cache_dir()}) and HF_HUB_OFFLINE is set; '
        f'unset HF_HUB_OFFLINE to download it, or use local-dir:PATH for a folder with config.json and '
        f'model.safetensors')


def _cached(repo: str, filename: str, revision: str | None) -> str | None:
    from huggingface_hub import try_to_load_from_cache
    found = try_to_load_from_cache(repo, filename, revision=revision)
    return found if isinstance(found, str) else None


@contextlib.contextmanager
def _no_agent_lookup():
    """huggingface_hub builds its user agent by fetching a registry from the endpoint (once per process,
    3 s timeout) unless telemetry is off; against an unreachable Hub that alone would eat the deadline."""
    from huggingface_hub import constants
    before = constants.HF_HUB_DISABLE_TELEMETRY
    constants.HF_HUB_DISABLE_TELEMETRY = True
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_TELEMETRY = before


def _hub_has(spec: str, repo: str, filename: str, revision: str | None, deadline: float,
             endpoint: str | None = None) -> bool:
    """One HEAD request, no retries; True/False for present/absent, raises for no answer."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import (
        EntryNotFoundError, GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    left = deadline - time.monotonic()
    if left <= 0:
        raise _unreachable(spec, 'no answer in time')
    url = hf_hub_url(repo, filename, revision=revision, endpoint=endpoint)
    try:
        with _no_agent_lookup():
            get_hf_file_metadata(url, timeout=left, retry_on_errors=False)
        return True
    except GatedRepoError:
        raise WeightsUnavailableError(f'{spec} is gated on the Hub; accept its terms on the model page and log in '
                                      f'(hf auth login or HF_TOKEN)') from None
    except RepositoryNotFoundError:
        raise WeightsUnavailableError(f'{spec}: repository {repo} does not exist on the Hub (or is private); '
                                      f'check the name, or log in with a token that can read it') from None
    except RevisionNotFoundError:
        raise WeightsUnavailableError(f'{spec}: revision {revision} does not exist in {repo}; '
                                      f'give a branch, tag or commit of that repository') from None
    except EntryNotFoundError:
        return False
    except OfflineModeIsEnabled:
        raise _offline(spec) from None
    except HfHubHTTPError as e:
        raise _unreachable(spec, f'HTTP {e.response.status_code}') from None
    except Exception as e:  # connection refused, DNS, timeouts: httpx2's types, not ours to enumerate
        raise _unreachable(spec, type(e).__name__) from None


def check_hub_files(spec: ModelSpec, repo: str, revision: str | None, needed: list[tuple[str, ...]],
                    deadline_s: float = DEFAULT_DEADLINE_S, endpoint: str | None = None) -> WeightsCheck:
    """Each entry of ``needed`` is a tuple of alternatives, one of which must exist (cache, else Hub).

    ``endpoint`` defaults to huggingface_hub's (``HF_ENDPOINT`` when it was imported).
    """
    from huggingface_hub import constants
    missing = [alts for alts in needed if not any(_cached(repo, f, revision) for f in alts)]
    if not missing:
        return WeightsCheck(spec, 'cache', hub_cache_dir())
    if constants.HF_HUB_OFFLINE:
        raise _offline(spec)
    deadline = time.monotonic() + deadline_s
    for alts in missing:
        if not any(_hub_has(spec, repo, f, revision, deadline, endpoint) for f in alts):
            raise WeightsUnavailableError(f'{spec}: {repo} has none of {", ".join(alts)}; '
                                          f'point to a repository with timm weights')
    return WeightsCheck(spec, 'hub', f'{repo}@{revision or "main"}', hub_reachable=True)


def _timm_weight_source(spec: str) -> tuple[str, str | None, tuple[str, ...]]:
    """(repo, revision, weight file alternatives) behind a timm name, from its registered pretrained cfg."""
    from timm.models import get_pretrained_cfg
    try:
        cfg = get_pretrained_cfg(spec)
    except RuntimeError:  # an unknown tag
        raise WeightsUnavailableError(f'{spec}: timm has no weights with that tag; list them with '
                                      f'timm.list_pretrained("{spec.split(".")[0]}*")') from None
    hub_id = cfg.hf_hub_id if cfg is not None else None
    if not hub_id:
        raise WeightsUnavailableError(f'{spec} has no pretrained weights on the Hub; pass --no-pretrained with '
                                      f'--initial-checkpoint FILE, or use a model that has weights')
    repo, _, revision = hub_id.partition('@')
    filename = cfg.hf_hub_filename
    if filename and filename.endswith('.bin'):
        files = (filename[:-4] + '.safetensors', filename)
    else:
        files = (filename,) if filename else HUB_WEIGHT_FILES
    return repo, revision or None, files


def check_weights_available(spec: str | ModelSpec, pretrained: bool = True, deadline_s: float = DEFAULT_DEADLINE_S,
                            endpoint: str | None = None) -> WeightsCheck:
    """Raise one sentence when ``timm.create_model(spec, pretrained=...)`` would not find its weights."""
    spec = parse_spec(spec)
    if spec.source == LOCAL_DIR:
        check_local_dir(spec.path)
        return WeightsCheck(spec, 'local-dir', spec.path.name)
    if spec.source == HF_HUB:
        needed = [('config.json',)] + ([HUB_WEIGHT_FILES] if pretrained else [])
        return check_hub_files(spec, spec.hub_id, spec.revision, needed, deadline_s, endpoint)
    if not pretrained:
        return WeightsCheck(spec, 'none', 'random initialisation')
    repo, revision, files = _timm_weight_source(spec.text)
    return check_hub_files(spec, repo, revision, [files], deadline_s, endpoint)


def check_local_dir(path: str | Path) -> Path:
    """A ``local-dir:`` folder timm can load: config.json a JSON object, a weights file whose header is whole."""
    folder = Path(path)
    if not folder.is_dir():
        raise WeightsUnavailableError(f'model folder {folder} does not exist; give a folder with config.json and '
                                      f'model.safetensors')
    config = folder / 'config.json'
    try:
        parsed = json.loads(config.read_text(encoding='utf-8'))
    except FileNotFoundError:
        raise WeightsUnavailableError(f'model folder {folder} has no config.json; export it with '
                                      f'timm.models.save_for_hf or timm_gkt') from None
    except (ValueError, UnicodeDecodeError) as e:
        raise WeightsUnavailableError(f'{config} is not valid JSON ({str(e)[:80]}); restore the file from where '
                                      f'the model was exported') from None
    if not isinstance(parsed, dict) or not parsed.get('architecture'):
        raise WeightsUnavailableError(f'{config} names no architecture; export the model with '
                                      f'timm.models.save_for_hf or timm_gkt')
    weights = next((folder / f for f in LOCAL_WEIGHT_FILES if (folder / f).is_file()), None)
    if weights is None:
        raise WeightsUnavailableError(f'model folder {folder} has no weights file ({", ".join(LOCAL_WEIGHT_FILES[:2])}); '
                                      f'copy the exported model.safetensors next to config.json')
    if weights.suffix == '.safetensors':
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(str(weights), framework='pt') as f:
                f.keys()
        except (SafetensorError, OSError) as e:
            raise WeightsUnavailableError(f'{weights} is truncated or damaged ({str(e)[:80]}); '
                                          f'copy the file again from where the model was exported') from None
    return weights
