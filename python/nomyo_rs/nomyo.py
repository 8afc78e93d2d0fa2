"""`nomyo.nomyo`'s name: SecureChatCompletion."""

from ._client import SecureChatCompletion

__all__ = ["SecureChatCompletion"]
