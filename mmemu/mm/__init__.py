"""The emulated mm/: one module per kernel file (page, page_alloc, filemap,
mmap, memory, rmap, truncate, vmscan, migrate, mmu_notifier)."""
