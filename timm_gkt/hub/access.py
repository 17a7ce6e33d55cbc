"""May this token write to that repository? Checked before training, without creating anything.

Every failure is a :class:`PushAccessError` with one sentence naming the fix.
"""
from __future__ import annotations

from ..errors import PushAccessError

LOGIN_FIX = 'run `hf auth login` (or set HF_TOKEN) with a token that has write access'
# Org roles allowed to create repositories in an org ('read' members cannot; contributors can create their own).
WRITE_ROLES = frozenset({'admin', 'write', 'contributor'})


def resolve_token(token: str | None = None) -> str | None:
    """The explicit token, else huggingface_hub's (HF_TOKEN, then the saved `hf auth login`)."""
    if token:
        return token
    from huggingface_hub import get_token
    return get_token()


def http_status(error: BaseException) -> int | None:
    response = getattr(error, 'response', None)
    return getattr(response, 'status_code', None)


def is_network_error(error: BaseException) -> bool:
    try:  # huggingface_hub 2.x speaks httpx2, 1.x httpx
        from httpx2 import TransportError
    except ImportError:
        from httpx import TransportError
    return isinstance(error, (TransportError, ConnectionError, TimeoutError))


def describe_error(error: BaseException) -> str:
    """A one-line description of an HTTP/network error (never headers, so never the token)."""
    status = http_status(error)
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if status is not None and str(status) not in text:
        text = f'HTTP {status}: {text}'
    return text


def check_push_options(revision: str | None = None, create_pr: bool = False) -> None:
    """Option combinations the Hub cannot honour, caught before training."""
    if create_pr and revision not in (None, 'main'):
        raise PushAccessError(f'A pull request is always opened against main, so --hub-create-pr cannot be combined '
                              f'with --hub-revision {revision}; drop one of the two.')


def check_push_access(
        repo_id: str,
        token: str | None = None,
        endpoint: str | None = None,
        *,
        revision: str | None = None,
        create_pr: bool = False,
) -> None:
    """Raise PushAccessError unless a token exists and may write to ``repo_id``; creates nothing.

    An existing repository is asked directly (``auth_check(write=True)``). A repository that
    does not exist yet (404) is pushable when its namespace is the token's user or one of
    its orgs with a role that may create repositories, and the token is not read-only.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    check_push_options(revision, create_pr)
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise PushAccessError(f'{repo_id!r} is not a valid repository id; use NAMESPACE/NAME such as alice/vit-gkt.') from None
    if '/' not in repo_id:
        raise PushAccessError(f'{repo_id!r} names no namespace; use NAMESPACE/NAME (your user name or an org).')
    token = resolve_token(token)
    if not token:
        raise PushAccessError(f'No Hugging Face token found to push to {repo_id}; {LOGIN_FIX}.')
    api = HfApi(endpoint=endpoint, token=token)
    if not _repo_exists_and_is_writable(api, repo_id):
        _check_may_create(api, repo_id)


def _repo_exists_and_is_writable(api, repo_id: str) -> bool:
    """True when the repository exists and the token may write to it; False when it does not exist (404)."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    where = api.endpoint
    try:
        api.auth_check(repo_id, write=True)
        return True
    except GatedRepoError:  # a subclass of RepositoryNotFoundError: ask first
        raise PushAccessError(f'{repo_id} is gated and your token has no access to it; {LOGIN_FIX} to it.') from None
    except RepositoryNotFoundError:
        return False  # not there yet (or hidden from us): decide from the namespace
    except Exception as e:  # noqa: BLE001 - every failure becomes one sentence naming the fix
        status = http_status(e)
        if status == 401:
            raise PushAccessError(f'The Hugging Face token was rejected by {where}; {LOGIN_FIX}.') from None
        if status == 403:
            raise PushAccessError(f'Your token may not write to {repo_id}; {LOGIN_FIX} to {repo_id}, '
                                  f'or push to a repository you own.') from None
        if is_network_error(e) or status is not None:
            raise PushAccessError(f'Could not check write access to {repo_id} at {where} ({describe_error(e)}); '
                                  f'check the connection and HF_ENDPOINT, then run again.') from None
        raise


def _check_may_create(api, repo_id: str) -> None:
    """A repository that does not exist yet: its namespace must be the token's user or a writable org."""
    where = api.endpoint
    try:
        me = api.whoami()
    except Exception as e:  # noqa: BLE001
        if http_status(e) == 401:
            raise PushAccessError(f'The Hugging Face token was rejected by {where}; {LOGIN_FIX}.') from None
        raise PushAccessError(f'Could not ask {where} who the token belongs to ({describe_error(e)}); '
                              f'check the connection and HF_ENDPOINT, then run again.') from None
    token_role = ((me.get('auth') or {}).get('accessToken') or {}).get('role')
    if token_role == 'read':
        raise PushAccessError(f'Your Hugging Face token is read-only, so it cannot create {repo_id}; {LOGIN_FIX}.')
    namespace = repo_id.split('/')[0]
    if namespace == me.get('name'):
        return
    roles = {org.get('name'): org.get('roleInOrg') for org in me.get('orgs') or []}
    if namespace not in roles:
        raise PushAccessError(f'{repo_id} does not exist and {namespace!r} is neither your user name '
                              f'({me.get("name")}) nor one of your organisations; push under your own namespace '
                              f'or join {namespace}.')
    if roles[namespace] not in WRITE_ROLES:
        raise PushAccessError(f'{repo_id} does not exist and your role in {namespace} ({roles[namespace]}) cannot '
                              f'create repositories; ask an admin of {namespace} for the write role or push under '
                              f'your own namespace.')
