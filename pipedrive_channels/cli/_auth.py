"""``pipedrive-channels auth login``: authorize the app in a browser and save the token file (mode 0600)."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..auth import JsonFileTokenStore
from ..errors import PipedriveError
from ._common import EXIT_FAILED, EXIT_OK, UsageError, to_stderr
from ._credentials import ENV_CLIENT_ID, ENV_CLIENT_SECRET, oauth_app


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``auth`` command and its ``login`` subcommand."""
    auth = commands.add_parser("auth", help="OAuth log-in")
    auth_commands = auth.add_subparsers(dest="auth_command", required=True, metavar="SUBCOMMAND")
    login = auth_commands.add_parser(
        "login",
        help="authorize the app and save the token file",
        description=f"Print the authorization URL, read the code (or the whole callback URL) from stdin, exchange "
        f"it and save the token (mode 0600). The app's id and secret come from ${ENV_CLIENT_ID} and "
        f"${ENV_CLIENT_SECRET}.",
    )
    login.add_argument("--redirect-uri", required=True, metavar="URI", help="the app's registered callback URL")
    login.add_argument("--token-file", required=True, metavar="PATH", help="where to save the token")
    login.add_argument("--authorize-url", metavar="URL", help="OAuth authorize endpoint (default Pipedrive's)")
    login.add_argument("--token-url", metavar="URL", help="OAuth token endpoint (default Pipedrive's)")
    login.set_defaults(handler=_login)


def _code_from(answer: str, state: str) -> str:
    """The authorization code from what the user pasted: the code itself, or the callback URL (or its query)."""
    if "code=" not in answer and "error=" not in answer:
        return answer
    params = parse_qs(urlsplit(answer).query if "?" in answer else answer)
    if "error" in params:
        raise PipedriveError(f"the authorization was refused: {params['error'][0]}")
    returned = params.get("state", [])
    if not returned:  # without it, the forgery check could not be made
        raise UsageError("the callback URL holds no state: paste the whole URL you were sent back to, or the code")
    # Bytes: compare_digest refuses str with non-ASCII characters, which a pasted URL may hold.
    if len(returned) != 1 or not secrets.compare_digest(returned[0].encode(), state.encode()):
        raise PipedriveError("the callback's state does not match this login (a stale or forged URL); log in again")
    return params.get("code", [""])[0]


def _login(args: argparse.Namespace) -> int:
    app = oauth_app(args.token_url, redirect_uri=args.redirect_uri, authorize_url=args.authorize_url, required=True)
    assert app is not None
    path = Path(args.token_file)
    if not path.parent.is_dir():
        raise UsageError(f"the folder of --token-file {args.token_file} does not exist")
    state = secrets.token_urlsafe(16)
    to_stderr("Open this URL in a browser and approve the app:")
    print(app.authorization_url(state), flush=True)
    to_stderr("Then paste the code, or the whole URL you were sent back to: ", end="")
    answer = sys.stdin.readline().strip()
    if not answer:
        raise UsageError("no authorization code given")
    try:
        code = _code_from(answer, state)
        if not code:
            raise UsageError("the callback URL holds no code")
        token = asyncio.run(app.exchange_code(code))
    except PipedriveError as error:
        to_stderr(f"error: {error}")
        return EXIT_FAILED
    asyncio.run(JsonFileTokenStore(path).save(token))
    expires = f"expires at {token.expires_at:%Y-%m-%d %H:%M:%S %Z}" if token.expires_at else "no expiry given"
    print(f"token saved to {path} ({expires})")
    return EXIT_OK
