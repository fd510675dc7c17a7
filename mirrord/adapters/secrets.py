"""AWS Secrets Manager: where the Slack webhook URL is kept.

:func:`resolve_webhook` finds the URL: given directly, or in a secret. A problem with
either turns notifications off with one warning (the sync goes on); the secret's value
appears in no log line or exception message, only its id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
import structlog
from botocore.exceptions import BotoCoreError, ClientError

from mirrord.adapters.slack import check_webhook_url
from mirrord.core.errors import InputError, StoreError

if TYPE_CHECKING:  # the stubs are a dev dependency: the Lambda zip and the image lack them
    from types_aiobotocore_secretsmanager.client import SecretsManagerClient

log = structlog.get_logger("mirrord.secrets")


async def read_secret(client: SecretsManagerClient, secret_id: str) -> str:
    """The SecretString of ``secret_id``. botocore's errors become ``StoreError`` here,
    with the AWS error code (or the exception's type) as ``code``; a secret without a
    string is an ``InputError``."""
    try:
        answer = await client.get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        raise StoreError("GetSecretValue failed", key=secret_id, code=code) from exc
    except BotoCoreError as exc:
        raise StoreError("GetSecretValue failed", key=secret_id, code=type(exc).__name__) from exc
    value = answer.get("SecretString")
    if not isinstance(value, str):
        raise InputError("slack secret has no SecretString")
    return value


def webhook_from_secret(value: str) -> str:
    """The webhook in a secret: the URL itself, or JSON ``{"webhook_url": …}`` (or
    ``{"url": …}``). ``InputError`` otherwise, never quoting the value."""
    text = value.strip()
    if text.startswith("{"):
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise InputError("slack secret looks like JSON but does not parse") from None
        found = (doc.get("webhook_url") or doc.get("url")) if isinstance(doc, dict) else None
        if not isinstance(found, str):
            raise InputError('slack secret JSON has no "webhook_url" or "url" string')
        text = found
    return check_webhook_url(text)


async def resolve_webhook(
    secrets_client: SecretsManagerClient | None, *, secret_id: str | None, direct_url: str | None
) -> str | None:
    """The webhook URL, or None (notifications off; the sync goes on).

    ``direct_url`` wins; else ``secret_id`` is read with GetSecretValue through the
    aiobotocore secretsmanager client. Any problem is one ``slack_secret_unusable``
    warning that names the secret id, never its value."""
    if direct_url:
        try:
            return check_webhook_url(direct_url)
        except InputError as exc:
            log.warning("slack_secret_unusable", source="direct", reason=str(exc))
            return None
    if not secret_id:
        return None
    unusable = log.bind(source="secretsmanager", secret_id=secret_id)
    if secrets_client is None:
        unusable.warning("slack_secret_unusable", reason="no secretsmanager client")
        return None
    try:
        return webhook_from_secret(await read_secret(secrets_client, secret_id))
    except StoreError as exc:
        unusable.warning("slack_secret_unusable", reason=str(exc), code=exc.code)
    except InputError as exc:
        unusable.warning("slack_secret_unusable", reason=str(exc))
    return None
