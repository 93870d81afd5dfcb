# Makes what git cannot hold; runs in the build context.
chmod 755 tool
