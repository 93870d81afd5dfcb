# Makes what git cannot hold; runs in the build context.
ln -s dir dirlink
