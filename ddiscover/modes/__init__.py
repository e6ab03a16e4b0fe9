"""What happens to one client connection, per proxy mode (TCP only, so far)."""
