"""The ground floor every part reads: the site file (who and what: institutions, courses,
people, kits), the runtime (where: folders and ports of one installation) and every default
path. It imports nothing of the platform but the kit descriptors."""
