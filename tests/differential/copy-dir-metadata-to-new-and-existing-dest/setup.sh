# Makes what git cannot hold; runs in the build context.
chmod 700 closed && chmod 2750 closed
