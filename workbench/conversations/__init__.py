"""The one form of a conversation: messages, assistant turns and tool calls, and the view every part
reads stored traces through."""
