{
  # One small N-API addon: syscalls Node lacks, nothing else (see src/native/README.md).
  # Every src/native/*.c file is compiled in; each registers its functions itself
  # (COVE_EXPORT in registry.h), so areas of the addon can be added without touching this file.
  "targets": [
    {
      "target_name": "cove_native",
      "sources": ["<!@(ls -1 src/native/*.c)"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter", "-O2"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"]
    },
    {
      # The pod namespace holder's program (src/native/holder/): static, no libc, beside the addon.
      "target_name": "cove-holder",
      "type": "executable",
      "sources": ["src/native/holder/cove-holder.c"],
      "cflags!": ["-fPIC", "-pthread"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-Os", "-ffreestanding", "-fno-stack-protector",
                 "-fno-asynchronous-unwind-tables", "-fno-pie"],
      "ldflags!": ["-pthread", "-rdynamic"],
      "ldflags": ["-static", "-nostdlib", "-no-pie", "-Wl,--build-id=none"]
    }
  ]
}
