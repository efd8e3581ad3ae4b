"""deskpilot: a self-hosted AI operations desk for IT service teams."""

__version__ = "0.1.0"
