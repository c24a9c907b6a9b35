"""Code that plugins of more than one role use; it registers nothing."""
