"""`waymesh echo`: an HTTP/1.1 + HTTP/2 test backend that answers JSON describing each request."""

from waymesh.echo.behaviour import EchoRequest
from waymesh.echo.config import EchoConfig
from waymesh.echo.server import Server, serve_echo

__all__ = ["EchoConfig", "EchoRequest", "Server", "serve_echo"]
