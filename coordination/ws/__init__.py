"""The WebSocket door, ``/v1/ws`` (docs/websocket.md)."""
