"""MCP servers over streamable HTTP, through the ``mcp`` SDK."""
