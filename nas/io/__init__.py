"""Ground floor: writing outputs safely (atomic files, whole folders, locks) and keeping secrets out of them."""
