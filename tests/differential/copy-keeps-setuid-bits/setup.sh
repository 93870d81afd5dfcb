# Makes what git cannot hold; runs in the build context.
chmod 4755 suid && chmod 2755 sgid && chmod 1777 sticky
