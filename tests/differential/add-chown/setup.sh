# Makes what git cannot hold; runs in the build context.
mkdir -p t/d && echo x > t/d/x && tar --owner=7 --group=8 -cf app.tar -C t . && rm -rf t
