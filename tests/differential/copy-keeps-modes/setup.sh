# Makes what git cannot hold; runs in the build context.
chmod 600 private && chmod 700 exec && chmod 444 ro && chmod 700 closed && chmod 1777 open
