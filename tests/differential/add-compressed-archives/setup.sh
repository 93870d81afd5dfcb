# Makes what git cannot hold; runs in the build context.
mkdir -p t/app/bin t/app/lib && echo run > t/app/bin/run && chmod 755 t/app/bin/run && echo lib > t/app/lib/l && ln -s ../lib/l t/app/bin/l && tar --owner=1234 --group=5678 -cf app.tar -C t . && xz -k app.tar && bzip2 app.tar && rm -rf t
