"""Lists typed as text: model names, CIDRs, group names."""


def split_list(text: str) -> list[str]:
    """'a, b\\nc' -> ['a', 'b', 'c']: items separated by commas or new lines, blanks dropped."""
    return [item for item in (part.strip() for part in text.replace("\n", ",").split(",")) if item]
