"""bwsk: a combinator IR over ATen and compiler passes that find where a network preserves information."""
