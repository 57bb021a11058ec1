# t_dracut_root.sh with hostonly="yes" in the root's /etc/dracut.conf.d: 90crypt copies the
# root's crypttab entries itself, pvencrypt's module adds none twice. Fewer boots: boot 1
# converts in the foreground to the end, boot 2 comes up from vda_crypt.
DRACUT_HOSTONLY=1 . "$(dirname "$0")/t_dracut_root.sh"
