# Boot 4 of host/t_debian_root.sh: after the conversion, the root comes up from vda_crypt.
. /tests/debian-lib.sh
check_eq "root on the VG" "$(findmnt -n -o SOURCE /)" /dev/mapper/vg-root
check "vda_crypt is a LUKS2 crypt device on vda" \
  "cryptsetup status vda_crypt | grep -q 'type: *LUKS2' && cryptsetup status vda_crypt | grep -q 'device: */dev/vda\$'"
check "no reencryption left" "! cryptsetup luksDump /dev/vda | grep -q online-reencrypt"
check "the VG's PV is vda_crypt" "[ \"\$(pvs --noheadings -o pv_name -S vg_name=vg | tr -d ' ')\" = /dev/mapper/vda_crypt ]"
check_eq "nothing for pvencrypt-resume.service to do" "$(prop pvencrypt-resume.service ExecMainStartTimestampMonotonic)" 0
check_eq "marker intact" "$(sha /var/marker)" "$(cat /var/marker.sha)"
result
