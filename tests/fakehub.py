"""An in-process stand-in for the Hugging Face Hub, for testing the REAL client offline.

``FakeHub`` is a ``ThreadingHTTPServer`` on 127.0.0.1 (port 0, served from a thread)
that speaks the subset of the Hub protocol huggingface_hub 2.x uses for: whoami,
auth-check, create_repo, validate-yaml, preupload, commit, branch creation, pull
requests, refs, revision info, a revision's file tree, the model listing (``list_models`` with the filters the client sends: tags such
as ``base_model:finetune:ORG/NAME``, which the Hub derives from each card's front matter) and ``resolve`` (HEAD
for metadata / ``file_exists``, GET for downloads). Every file is answered ``uploadMode: regular`` at preupload, so
commits carry contents inline (base64 in the NDJSON body) and no LFS/Xet storage is
needed.

It records every request (method, path, headers, body) so tests can assert the exact
protocol the client spoke: a client upgrade that changes it fails loudly instead of
silently. Routes it does not know are printed to stderr, kept in ``unknown_routes``
and answered 404.

Writes need ``Authorization: Bearer <token>`` of a known account (401 otherwise),
like the Hub. ``fail(route, times, status)`` makes a route answer an error (or drop
the connection with ``status=0``) the next ``times`` calls, to exercise retries.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

_logger = logging.getLogger(__name__)

# Org roles that may create repositories in an org on the Hub (a 'read' member may not).
WRITE_ROLES = ('admin', 'write', 'contributor')


@dataclass
class Account:
    """A Hub user, its access token and org memberships (org -> roleInOrg)."""
    name: str
    token: str
    token_role: str = 'write'  # access-token role as whoami-v2 reports it: 'read' or 'write'
    orgs: dict[str, str] = field(default_factory=dict)

    def may_write(self, namespace: str) -> bool:
        if self.token_role != 'write':
            return False
        return namespace == self.name or self.orgs.get(namespace) in WRITE_ROLES

    def may_read(self, namespace: str) -> bool:
        return namespace == self.name or namespace in self.orgs


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    refs: dict[str, str] = field(default_factory=dict)  # 'main', other branches, 'refs/pr/N' -> commit oid
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit oid -> full tree (path -> bytes)
    commit_messages: dict[str, str] = field(default_factory=dict)
    discussions: list[dict] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return self.repo_id.split('/')[0]

    def resolve(self, revision: str) -> str | None:
        """Commit oid of a branch, PR ref or (full) commit oid; None if unknown."""
        if revision in self.refs:
            return self.refs[revision]
        if revision in self.commits:
            return revision
        return None


@dataclass
class Request:
    method: str
    path: str  # unquoted path, no query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int = 0
    route: str | None = None

    @property
    def line(self) -> str:
        return f'{self.method} {self.path}'


def git_blob_oid(content: bytes) -> str:
    """The git blob sha1 the client compares at preupload to skip unchanged regular files."""
    return hashlib.sha1(b'blob %d\0' % len(content) + content).hexdigest()


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


_REPO = r'(?P<repo>[^/]+/[^/]+)'
# (name, method(s), pattern on the raw, still-quoted path). Order matters: first match wins.
ROUTES: list[tuple[str, tuple[str, ...], re.Pattern]] = [
    ('whoami', ('GET',), re.compile(r'^/api/whoami-v2$')),
    ('auth_check', ('GET',), re.compile(rf'^/api/models/{_REPO}/auth-check(?P<write>/write)?$')),
    ('create_repo', ('POST',), re.compile(r'^/api/repos/create$')),
    ('validate_yaml', ('POST',), re.compile(r'^/api/validate-yaml$')),
    ('preupload', ('POST',), re.compile(rf'^/api/models/{_REPO}/preupload/(?P<rev>[^/]+)$')),
    ('commit', ('POST',), re.compile(rf'^/api/models/{_REPO}/commit/(?P<rev>[^/]+)$')),
    ('create_branch', ('POST',), re.compile(rf'^/api/models/{_REPO}/branch/(?P<branch>[^/]+)$')),
    ('refs', ('GET',), re.compile(rf'^/api/models/{_REPO}/refs$')),
    ('create_discussion', ('POST',), re.compile(rf'^/api/models/{_REPO}/discussions$')),
    ('discussion', ('GET',), re.compile(rf'^/api/models/{_REPO}/discussions/(?P<num>\d+)$')),
    ('model_info', ('GET',), re.compile(rf'^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$')),
    ('list_models', ('GET',), re.compile(r'^/api/models$')),
    ('tree', ('GET',), re.compile(rf'^/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$')),
    ('resolve', ('GET', 'HEAD'), re.compile(rf'^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$')),
]


class FakeHub:
    """``with FakeHub(accounts) as hub: HfApi(endpoint=hub.url, token=...)``."""

    def __init__(self, accounts: list[Account] | None = None):
        self.accounts = {a.token: a for a in (accounts or [])}
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self.unknown_routes: list[str] = []
        self._failures: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> 'FakeHub':
        hub = self

        class Handler(_Handler):
            fakehub = hub

        self._server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name='fakehub', daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> 'FakeHub':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f'http://{host}:{port}'

    # ------------------------------------------------------------------ test helpers
    def fail(self, route: str, times: int = 1, status: int = 500) -> None:
        """Answer ``status`` on the next ``times`` calls of ``route`` (0 = drop the connection)."""
        if route not in {name for name, _, _ in ROUTES}:
            raise ValueError(f'Unknown route {route!r}.')
        self._failures.setdefault(route, []).extend([status] * times)

    def calls(self, *, include_status: bool = False) -> list[str]:
        """The request sequence, as 'METHOD /path' lines (with ' -> status' if asked)."""
        return [f'{r.line} -> {r.status}' if include_status else r.line for r in self.requests]

    def received_text(self) -> str:
        """Everything the clients sent except the Authorization header, for secret scans."""
        parts = []
        for r in self.requests:
            query = '&'.join(f'{k}={v}' for k, vs in r.query.items() for v in vs)
            headers = '\n'.join(f'{k}: {v}' for k, v in r.headers.items() if k != 'authorization')
            parts.append(f'{r.line}?{query}\n{headers}\n{r.body.decode("utf-8", "replace")}')
        return '\n'.join(parts)

    def files(self, repo_id: str, revision: str = 'main') -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return dict(repo.commits[repo.resolve(revision)])

    def add_repo(self, repo_id: str, files: dict[str, bytes] | None = None, private: bool = False) -> Repo:
        with self._lock:
            repo = self._create(repo_id, private)
            if files:
                self._commit(repo, 'main', files, 'seed')
            return repo

    # ------------------------------------------------------------------ state
    def _next_oid(self, seed: str) -> str:
        self._counter += 1
        return hashlib.sha1(f'{seed}:{self._counter}'.encode()).hexdigest()

    def _create(self, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_id=repo_id, private=private)
        # the Hub seeds new repos with a .gitattributes commit on main
        oid = self._next_oid(repo_id)
        repo.commits[oid] = {'.gitattributes': b'*.safetensors filter=lfs diff=lfs merge=lfs -text\n'}
        repo.commit_messages[oid] = 'initial commit'
        repo.refs['main'] = oid
        self.repos[repo_id] = repo
        return repo

    def _commit(self, repo: Repo, ref: str, files: dict[str, bytes | None], message: str) -> str:
        tree = dict(repo.commits[repo.refs[ref]])
        for path, content in files.items():
            if content is None:
                tree.pop(path, None)
            else:
                tree[path] = content
        oid = self._next_oid(repo.repo_id + ref)
        repo.commits[oid] = tree
        repo.commit_messages[oid] = message
        repo.refs[ref] = oid
        return oid

    # ------------------------------------------------------------------ auth
    def _account(self, req: Request, required: bool) -> Account | None:
        auth = req.headers.get('authorization', '')
        if not auth:
            if required:
                raise HubError(401, 'Invalid credentials in Authorization header')
            return None
        token = auth[len('Bearer '):] if auth.startswith('Bearer ') else ''
        account = self.accounts.get(token)
        if account is None:
            # the Hub answers any request carrying a bad token this way, reads included
            raise HubError(401, 'Invalid credentials in Authorization header')
        return account

    def _repo(self, repo_id: str, account: Account | None) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not (account and account.may_read(repo.namespace))):
            raise HubError(404, 'Repository not found', 'RepoNotFound')
        return repo

    def _writable_repo(self, repo_id: str, account: Account) -> Repo:
        repo = self._repo(repo_id, account)
        if not account.may_write(repo.namespace):
            raise HubError(403, f'You do not have write access to {repo_id}', 'Forbidden')
        return repo

    # ------------------------------------------------------------------ routes
    def handle(self, route: str, req: Request, params: dict[str, str], base_url: str):
        """Return (status, headers, body bytes or JSON-able)."""
        handler = getattr(self, f'_route_{route}')
        with self._lock:
            return handler(req, params, base_url)

    def _route_whoami(self, req, params, base_url):
        account = self._account(req, required=True)
        return 200, {}, {
            'type': 'user', 'id': hashlib.md5(account.name.encode()).hexdigest()[:24], 'name': account.name,
            'fullname': account.name.title(), 'isPro': False, 'canPay': False,
            'orgs': [{'type': 'org', 'name': org, 'roleInOrg': role} for org, role in account.orgs.items()],
            'auth': {'type': 'access_token', 'accessToken': {'displayName': 'tests', 'role': account.token_role}},
        }

    def _route_auth_check(self, req, params, base_url):
        account = self._account(req, required=True)
        repo = self._repo(params['repo'], account)
        if params.get('write') and not account.may_write(repo.namespace):
            raise HubError(403, f'You do not have write access to {repo.repo_id}', 'Forbidden')
        return 200, {}, {}

    def _route_create_repo(self, req, params, base_url):
        account = self._account(req, required=True)
        payload = json.loads(req.body or b'{}')
        if payload.get('type', 'model') != 'model':
            raise HubError(400, 'fakehub only hosts model repositories')
        namespace = payload.get('organization') or account.name
        repo_id = f'{namespace}/{payload["name"]}'
        if not account.may_write(namespace):
            raise HubError(403, f'You do not have the rights to create a model under the namespace "{namespace}"')
        if repo_id in self.repos:
            return 409, {}, {'error': 'You already created this model repo', 'url': f'{base_url}/{repo_id}'}
        self._create(repo_id, private=payload.get('visibility') == 'private')
        return 200, {}, {'url': f'{base_url}/{repo_id}', 'name': repo_id, 'id': repo_id}

    def _route_validate_yaml(self, req, params, base_url):
        self._account(req, required=False)
        content = json.loads(req.body).get('content', '')
        match = re.match(r'^---\r?\n(.*?)\r?\n---\r?\n', content, re.S)
        errors = []
        if match is None:
            errors.append({'message': 'README.md has no YAML front matter'})
        else:
            try:
                meta = yaml.safe_load(match.group(1))
            except yaml.YAMLError as e:
                meta, errors = None, [{'message': f'invalid YAML: {e}'}]
            if not errors and not isinstance(meta, dict):
                errors.append({'message': 'metadata is not a mapping'})
            elif not errors and 'model-index' in meta:
                for entry in meta['model-index']:
                    if not entry.get('name') or not isinstance(entry.get('results'), list):
                        errors.append({'message': 'model-index entries need a name and results'})
        return (400 if errors else 200), {}, {'errors': errors, 'warnings': []}

    def _route_preupload(self, req, params, base_url):
        account = self._account(req, required=True)
        repo = self._writable_repo(params['repo'], account)
        head = repo.resolve(params['rev'])
        if head is None:
            raise HubError(404, 'Revision not found', 'RevisionNotFound')
        tree = repo.commits[head]
        files = json.loads(req.body)['files']
        return 200, {}, {'files': [{
            'path': f['path'], 'uploadMode': 'regular', 'shouldIgnore': False,
            'oid': git_blob_oid(tree[f['path']]) if f['path'] in tree else None,
        } for f in files]}

    def _route_commit(self, req, params, base_url):
        account = self._account(req, required=True)
        repo = self._writable_repo(params['repo'], account)
        ref = params['rev']
        if ref not in repo.refs:
            raise HubError(404, f'Revision {ref} not found (commits go to branches or PR refs)', 'RevisionNotFound')
        lines = [json.loads(line) for line in req.body.splitlines() if line.strip()]
        header = next(item['value'] for item in lines if item['key'] == 'header')
        changes: dict[str, bytes | None] = {}
        for item in lines:
            value = item['value']
            if item['key'] == 'file':
                if value.get('encoding') != 'base64':
                    raise HubError(400, f'unsupported encoding {value.get("encoding")!r}')
                changes[value['path']] = base64.b64decode(value['content'])
            elif item['key'] == 'deletedFile':
                changes[value['path']] = None
            elif item['key'] != 'header':
                raise HubError(400, f'fakehub does not store {item["key"]} operations (answer regular at preupload)')
        pr_url = None
        if req.query.get('create_pr') == ['1']:
            num = self._open_pr(repo, account, header['summary'])
            ref = f'refs/pr/{num}'
            pr_url = f'{base_url}/{repo.repo_id}/discussions/{num}'
        oid = self._commit(repo, ref, changes, header['summary'])
        return 200, {}, {'commitUrl': f'{base_url}/{repo.repo_id}/commit/{oid}', 'commitOid': oid,
                         'pullRequestUrl': pr_url}

    def _open_pr(self, repo: Repo, account: Account, title: str) -> int:
        num = len(repo.discussions) + 1
        repo.discussions.append({'num': num, 'title': title, 'author': account.name, 'base': 'main',
                                 'createdAt': datetime.now(timezone.utc).isoformat().replace('+00:00', 'Z')})
        repo.refs[f'refs/pr/{num}'] = repo.refs['main']
        return num

    def _route_create_branch(self, req, params, base_url):
        account = self._account(req, required=True)
        repo = self._writable_repo(params['repo'], account)
        branch = params['branch']
        if branch in repo.refs:
            raise HubError(409, f'Branch {branch} already exists')
        start = json.loads(req.body or b'{}').get('startingPoint', 'main')
        oid = repo.resolve(start)
        if oid is None:
            raise HubError(404, f'Revision {start} not found', 'RevisionNotFound')
        repo.refs[branch] = oid
        return 200, {}, {}

    def _route_refs(self, req, params, base_url):
        repo = self._repo(params['repo'], self._account(req, required=False))
        branches = [{'name': n, 'ref': f'refs/heads/{n}', 'targetCommit': oid}
                    for n, oid in repo.refs.items() if not n.startswith('refs/')]
        return 200, {}, {'branches': branches, 'converts': [], 'tags': []}

    def _route_create_discussion(self, req, params, base_url):
        account = self._account(req, required=True)
        repo = self._writable_repo(params['repo'], account)
        payload = json.loads(req.body)
        if not payload.get('pullRequest'):
            raise HubError(400, 'fakehub only opens pull requests')
        return 200, {}, {'num': self._open_pr(repo, account, payload['title'])}

    def _route_discussion(self, req, params, base_url):
        repo = self._repo(params['repo'], self._account(req, required=False))
        num = int(params['num'])
        if not 0 < num <= len(repo.discussions):
            raise HubError(404, 'Discussion not found')
        d = repo.discussions[num - 1]
        return 200, {}, {
            'num': num, 'title': d['title'], 'author': {'name': d['author']}, 'createdAt': d['createdAt'],
            'status': 'draft', 'repo': {'name': repo.repo_id, 'type': 'model'}, 'isPullRequest': True,
            'events': [], 'changes': {'base': f'refs/heads/{d["base"]}'}, 'filesWithConflicts': [], 'diff': '',
        }

    def _route_model_info(self, req, params, base_url):
        repo = self._repo(params['repo'], self._account(req, required=False))
        oid = repo.resolve(params.get('rev') or 'main')
        if oid is None:
            raise HubError(404, 'Revision not found', 'RevisionNotFound')
        meta = card_metadata(repo.commits[oid].get('README.md'))
        return 200, {}, {
            'id': repo.repo_id, 'modelId': repo.repo_id, 'sha': oid, 'private': repo.private,
            'siblings': [{'rfilename': p} for p in sorted(repo.commits[oid])], 'tags': hub_tags(meta),
            'cardData': meta or None,
        }

    # the query parameters HfApi.list_models sends (huggingface_hub 2.x); any other is a protocol change to notice
    LIST_PARAMS = frozenset({'filter', 'author', 'search', 'limit', 'full', 'cardData', 'config', 'expand', 'sort',
                             'direction', 'pipeline_tag'})

    def _route_list_models(self, req, params, base_url):
        unknown = sorted(set(req.query) - self.LIST_PARAMS)
        if unknown:
            self.unknown_routes.append(f'GET /api/models?{"&".join(unknown)}')
            raise HubError(400, f'fakehub does not filter by {", ".join(unknown)}')
        account = self._account(req, required=False)
        wanted, flag = req.query.get('filter', []), (lambda name: req.query.get(name) in (['True'], ['true'], ['1']))
        author, search = (req.query.get('author') or [None])[0], (req.query.get('search') or [''])[0]
        found = []
        for repo in sorted(self.repos.values(), key=lambda r: r.repo_id):
            if repo.private and not (account and account.may_read(repo.namespace)):
                continue
            oid = repo.refs['main']
            meta = card_metadata(repo.commits[oid].get('README.md'))
            tags = hub_tags(meta)
            if not all(f in tags for f in wanted) or (author and repo.namespace != author) or search not in repo.repo_id:
                continue
            item = {'_id': oid[:24], 'id': repo.repo_id, 'modelId': repo.repo_id, 'author': repo.namespace, 'sha': oid,
                    'private': repo.private, 'tags': tags, 'library_name': meta.get('library_name'),
                    'pipeline_tag': meta.get('pipeline_tag'), 'lastModified': '2026-01-01T00:00:00.000Z'}
            if flag('full'):
                item['siblings'] = [{'rfilename': p} for p in sorted(repo.commits[oid])]
            if flag('cardData') or flag('full'):
                item['cardData'] = meta or None
            found.append(item)
        limit = int((req.query.get('limit') or [len(found)])[0])
        return 200, {}, found[:limit]

    def _route_tree(self, req, params, base_url):
        """The files of a revision (``list_repo_tree``, which ``snapshot_download`` asks before downloading)."""
        repo = self._repo(params['repo'], self._account(req, required=False))
        oid = repo.resolve(params['rev'])
        if oid is None:
            raise HubError(404, 'Revision not found', 'RevisionNotFound')
        prefix = (params.get('path') or '').strip('/')
        files = sorted(p for p in repo.commits[oid] if not prefix or p.startswith(prefix + '/'))
        if req.query.get('recursive') not in (['True'], ['true'], ['1']):
            raise HubError(400, 'fakehub lists whole trees only (recursive=True)')
        return 200, {}, [{'type': 'file', 'oid': git_blob_oid(repo.commits[oid][p]),
                          'size': len(repo.commits[oid][p]), 'path': p} for p in files]

    def _route_resolve(self, req, params, base_url):
        repo = self._repo(params['repo'], self._account(req, required=False))
        oid = repo.resolve(params['rev'])
        if oid is None:
            raise HubError(404, 'Revision not found', 'RevisionNotFound')
        content = repo.commits[oid].get(params['path'])
        if content is None:
            raise HubError(404, 'Entry not found', 'EntryNotFound', {'X-Repo-Commit': oid})
        headers = {'ETag': f'"{git_blob_oid(content)}"', 'X-Repo-Commit': oid,
                   'Content-Type': 'application/octet-stream'}
        return 200, headers, content


def card_metadata(readme: bytes | None) -> dict:
    """The YAML front matter of a README.md ({} without a card or front matter), as the Hub parses it."""
    if not readme:
        return {}
    match = re.match(r'^---\r?\n(.*?)\r?\n---\r?\n', readme.decode('utf-8', 'replace'), re.S)
    meta = yaml.safe_load(match.group(1)) if match else None
    return meta if isinstance(meta, dict) else {}


def hub_tags(meta: dict) -> list[str]:
    """The tags the Hub lists a model under: its card's tags, library, license and datasets, and its place in the
    model tree (``base_model:ID`` and ``base_model:RELATION:ID``; several base models without a relation: a merge)."""
    tags = list(meta.get('tags') or [])
    tags += [meta[k] for k in ('library_name',) if meta.get(k)]
    tags += [f'license:{meta["license"]}'] if meta.get('license') else []
    tags += [f'dataset:{d}' for d in meta.get('datasets') or []]
    bases = meta.get('base_model') or []
    bases = [bases] if isinstance(bases, str) else list(bases)
    relation = meta.get('base_model_relation') or ('merge' if len(bases) > 1 else 'finetune')
    for base in bases:
        tags += [f'base_model:{base}', f'base_model:{relation}:{base}']
    return tags


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    fakehub: FakeHub

    def log_message(self, format, *args):  # the request log lives in FakeHub.requests
        pass

    def _read_body(self) -> bytes:
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            chunks = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b''.join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(length) if length else b''

    def _dispatch(self):
        hub = self.fakehub
        split = urlsplit(self.path)
        req = Request(method=self.command, path=unquote(split.path), query=parse_qs(split.query),
                      headers={k.lower(): v for k, v in self.headers.items()}, body=self._read_body())
        with hub._lock:
            hub.requests.append(req)
        base_url = f'http://{self.headers.get("Host") or "127.0.0.1"}'
        for name, methods, pattern in ROUTES:
            match = pattern.match(split.path)
            if match and self.command in methods:
                req.route = name
                params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                break
        else:
            message = f'fakehub: unknown route {self.command} {split.path}'
            hub.unknown_routes.append(f'{self.command} {split.path}')
            print(f'\n!!! {message} !!!', file=sys.stderr, flush=True)
            _logger.error(message)
            return self._send(req, 404, {'X-Error-Message': message}, {'error': message})

        with hub._lock:
            pending = hub._failures.get(name)
            injected = pending.pop(0) if pending else None
        if injected == 0:
            req.status = -1  # connection dropped without an answer, as a broken proxy would
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if injected is not None:
            return self._send(req, injected, {'X-Error-Message': 'fakehub: injected failure'},
                              {'error': f'injected {injected}'})
        try:
            status, headers, body = hub.handle(name, req, params, base_url)
        except HubError as e:
            headers = {'X-Error-Message': e.message, **e.headers}
            if e.code:
                headers['X-Error-Code'] = e.code
            return self._send(req, e.status, headers, {'error': e.message})
        return self._send(req, status, headers, body)

    def _send(self, req: Request, status: int, headers: dict, body):
        req.status = status
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        if not isinstance(body, bytes):
            self.send_header('Content-Type', 'application/json')
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header('Content-Length', str(len(payload)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(payload)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _dispatch
